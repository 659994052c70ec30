"""Subscriptions a provider bills itself (Stripe): the provider's subscription id; paused.

Revision ID: 0017
Revises: 0016
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as b:
        b.add_column(sa.Column("provider_ref", sa.String(255), nullable=True))
        b.add_column(sa.Column("paused_at", sa.DateTime(), nullable=True))
        b.create_unique_constraint("uq_subscriptions_provider_ref", ["provider", "provider_ref"])


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as b:
        b.drop_constraint("uq_subscriptions_provider_ref", type_="unique")
        b.drop_column("paused_at")
        b.drop_column("provider_ref")
