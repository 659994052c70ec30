"""Licences that follow a subscription: ``licenses.subscription_id`` (unique: one licence per
subscription, so a retried create or a replayed webhook never issues two).

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("licenses") as b:
        b.add_column(sa.Column("subscription_id", sa.String(40), nullable=True))
        b.create_unique_constraint(op.f("uq_licenses_subscription_id"), ["subscription_id"])


def downgrade() -> None:
    with op.batch_alter_table("licenses") as b:
        b.drop_constraint(op.f("uq_licenses_subscription_id"), type_="unique")
        b.drop_column("subscription_id")
