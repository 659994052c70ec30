"""A debit that costs the same in a big wallet: the wallet's stored credit sum
(``wallets.credits``) and the instant until which all its grants with credits are live
(``wallets.live_until``, unknown at first), ``grants.has_credits`` (``remaining > 0``) and indexes to read a
wallet's grants with credits in spend order, and those not live now.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# as in tollkeep.models.Grant (written out: a migration does not follow later models)
INDEXES: tuple[tuple[str, tuple[str | sa.TextClause, ...]], ...] = (
    (
        "ix_grants_spend",
        (
            "wallet_id",
            "has_credits",
            "priority",
            sa.text("(expires_at IS NULL)"),
            "expires_at",
            "created_at",
            "id",
        ),
    ),
    ("ix_grants_expiry", ("wallet_id", "has_credits", "expires_at")),
    ("ix_grants_pending", ("wallet_id", "has_credits", "effective_at")),
)


def upgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.add_column(sa.Column("credits", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("live_until", sa.DateTime(), nullable=True))
    op.execute(
        "UPDATE wallets SET credits = COALESCE((SELECT SUM(g.remaining) FROM grants g "
        "WHERE g.wallet_id = wallets.id), 0)"
    )
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("has_credits", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute("UPDATE grants SET has_credits = (remaining > 0)")
    for name, cols in INDEXES:
        op.create_index(name, "grants", list(cols))


def downgrade() -> None:
    for name, _ in reversed(INDEXES):
        op.drop_index(name, table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("has_credits")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("live_until")
        batch.drop_column("credits")
