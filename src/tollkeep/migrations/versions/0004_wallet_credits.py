"""A debit that costs the same in a big wallet: the wallet's stored credit sum, and partial
indexes of grants with credits left (spend order; grants not live now).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# as in tollkeep.models.GRANT_INDEXES (written out: a migration does not follow later models)
INDEXES = (
    (
        "ix_grants_spend_expiring",
        ("wallet_id", "priority", "expires_at", "created_at", "id"),
        "remaining > 0 AND expires_at IS NOT NULL",
    ),
    (
        "ix_grants_spend_lasting",
        ("wallet_id", "priority", "created_at", "id"),
        "remaining > 0 AND expires_at IS NULL",
    ),
    ("ix_grants_expiry", ("wallet_id", "expires_at"), "remaining > 0"),
    ("ix_grants_pending", ("wallet_id", "effective_at"), "remaining > 0"),
    ("ix_grants_closed", ("wallet_id",), "remaining > 0 AND closed_at IS NOT NULL"),
)


def upgrade() -> None:
    with op.batch_alter_table("wallets") as batch:
        batch.add_column(sa.Column("credits", sa.BigInteger(), nullable=False, server_default="0"))
    op.execute(
        "UPDATE wallets SET credits = COALESCE((SELECT SUM(g.remaining) FROM grants g "
        "WHERE g.wallet_id = wallets.id), 0)"
    )
    for name, cols, where in INDEXES:
        op.create_index(
            name, "grants", list(cols), sqlite_where=sa.text(where), postgresql_where=sa.text(where)
        )


def downgrade() -> None:
    for name, _, _ in reversed(INDEXES):
        op.drop_index(name, table_name="grants")
    with op.batch_alter_table("wallets") as batch:
        batch.drop_column("credits")
