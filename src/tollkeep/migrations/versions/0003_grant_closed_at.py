"""Grants can be closed for good (a plan change ends the old plan's allowance grants).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("closed_at", sa.DateTime(), nullable=True))
    # allowance grants already ended by a plan change (closed before this column existed)
    op.execute(
        "UPDATE grants SET closed_at = (SELECT MAX(j.created_at) FROM journal_entries j "
        "WHERE j.grant_id = grants.id AND j.kind = 'plan_change') "
        "WHERE EXISTS (SELECT 1 FROM journal_entries j WHERE j.grant_id = grants.id "
        "AND j.kind = 'plan_change')"
    )


def downgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("closed_at")
