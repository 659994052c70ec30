"""Caps and tier counters follow a subscription's own periods (issue #10): the wallet carries
the periods of the subscription billing its customer's plan, and a counter's period key grows
to hold a subscription period's start ("sm:2026-03-17T09:30:00.000000Z").

Revision ID: 0018
Revises: 0017
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("wallets") as b:
        b.add_column(sa.Column("period_anchor", sa.DateTime(), nullable=True))
        b.add_column(sa.Column("period_since", sa.DateTime(), nullable=True))
        b.add_column(sa.Column("period_until", sa.DateTime(), nullable=True))
    for table in ("usage_counters", "unique_values"):
        with op.batch_alter_table(table) as b:
            b.alter_column("period", existing_type=sa.String(16), type_=sa.String(40), nullable=False)
    # wallets of customers on the plan of a live subscription carry its periods from now on; the
    # plan's grace is the catalog's (not known here): up to the current cycle's end, then the
    # next settle of the subscription writes them with the grace
    live = (
        "FROM subscriptions s JOIN customers c ON c.id = s.customer_id "
        "WHERE s.customer_id = wallets.customer_id AND s.plan = c.plan "
        "AND s.status IN ('trialing', 'active', 'past_due') ORDER BY s.created_at DESC LIMIT 1"
    )
    op.execute(
        sa.text(
            f"UPDATE wallets SET period_anchor = (SELECT s.anchor_at {live}), "
            f"period_since = (SELECT s.started_at {live}), "
            f"period_until = (SELECT s.current_period_end {live})"
        )
    )


def downgrade() -> None:
    for table in ("usage_counters", "unique_values"):
        with op.batch_alter_table(table) as b:
            b.alter_column("period", existing_type=sa.String(40), type_=sa.String(16), nullable=False)
    if op.get_bind().dialect.name == "sqlite":
        # SQLite's own DROP COLUMN (3.35+): a batch rebuild of ``wallets`` would DROP TABLE a
        # table the journal, grants and holds reference, which its foreign keys refuse
        for column in ("period_until", "period_since", "period_anchor"):
            op.execute(f"ALTER TABLE wallets DROP COLUMN {column}")
        return
    with op.batch_alter_table("wallets") as b:
        b.drop_column("period_until")
        b.drop_column("period_since")
        b.drop_column("period_anchor")
