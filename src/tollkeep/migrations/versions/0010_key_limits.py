"""Per-key limits: spend limits (total, per day, per month), a tool allowlist, a rate limit
and a concurrency cap on ``api_keys``; the key a hold was opened with on ``holds``; and
``key_spend``, what each key has spent and holds per UTC day (written with the journal).

Existing charges are counted into ``key_spend`` here, so ``ledger verify`` agrees at once.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def _day(when: datetime | str) -> str:
    if isinstance(when, str):  # SQLite hands back text through a plain SELECT
        when = datetime.fromisoformat(when)
    if when.tzinfo is not None:
        when = when.astimezone(UTC)
    return when.strftime("%Y-%m-%d")


def upgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as b:
        b.add_column(sa.Column("spend_limit", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("spend_limit_daily", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("spend_limit_monthly", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("tools", sa.JSON(), nullable=True))
        b.add_column(sa.Column("rate_limit", sa.String(200), nullable=True))
        b.add_column(sa.Column("max_concurrency", sa.Integer(), nullable=True))
    with op.batch_alter_table("holds", schema=None) as b:
        b.add_column(sa.Column("api_key_id", sa.String(40), nullable=True))
    op.create_table(
        "key_spend",
        sa.Column("api_key_id", sa.String(40), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("spent", sa.BigInteger(), nullable=False),
        sa.Column("held", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "day", name=op.f("pk_key_spend")),
    )

    conn = op.get_bind()
    # the key a hold was opened with is on its operation
    conn.execute(
        sa.text(
            "UPDATE holds SET api_key_id = (SELECT o.api_key_id FROM operations o "
            "WHERE o.id = holds.operation_id AND o.api_key_id IN (SELECT id FROM api_keys))"
        )
    )
    spend: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for key_id, amount, created in conn.execute(
        sa.text(
            "SELECT api_key_id, amount, created_at FROM operations "
            "WHERE kind = 'usage' AND api_key_id IN (SELECT id FROM api_keys) "
            "AND (ref_id IS NULL OR ref_id NOT LIKE 'hld_%')"
        )
    ):
        spend[(key_id, _day(created))][0] += int(amount)
    for key_id, status, amount, settled, created in conn.execute(
        sa.text(
            "SELECT api_key_id, status, amount, settled_amount, created_at FROM holds "
            "WHERE api_key_id IS NOT NULL"
        )
    ):
        row = spend[(key_id, _day(created))]
        if status == "open":
            row[1] += int(amount)
        elif status == "settled":
            row[0] += int(settled or 0)
    if spend:
        table = sa.table(
            "key_spend",
            sa.column("api_key_id", sa.String),
            sa.column("day", sa.String),
            sa.column("spent", sa.BigInteger),
            sa.column("held", sa.BigInteger),
        )
        op.bulk_insert(
            table,
            [{"api_key_id": k, "day": d, "spent": v[0], "held": v[1]} for (k, d), v in spend.items()],
        )


def downgrade() -> None:
    op.drop_table("key_spend")
    with op.batch_alter_table("holds", schema=None) as b:
        b.drop_column("api_key_id")
    with op.batch_alter_table("api_keys", schema=None) as b:
        b.drop_column("max_concurrency")
        b.drop_column("rate_limit")
        b.drop_column("tools")
        b.drop_column("spend_limit_monthly")
        b.drop_column("spend_limit_daily")
        b.drop_column("spend_limit")
