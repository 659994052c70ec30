"""Plan changes (prorated upgrades, scheduled downgrades) and discount / free codes.

Revision ID: 0016
Revises: 0015
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("subscriptions") as b:
        b.add_column(sa.Column("period_price", sa.BigInteger(), nullable=True))
        b.add_column(sa.Column("discount_code", sa.String(64), nullable=True))
    with op.batch_alter_table("invoices") as b:
        b.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="renewal"))
        b.add_column(sa.Column("seq", sa.Integer(), nullable=False, server_default="0"))
        b.add_column(sa.Column("discount_code", sa.String(64), nullable=True))
        b.add_column(sa.Column("discount_amount", sa.BigInteger(), nullable=False, server_default="0"))
        b.drop_constraint("uq_invoices_cycle", type_="unique")
        b.create_unique_constraint("uq_invoices_cycle_kind", ["subscription_id", "cycle", "kind", "seq"])
    op.create_table(
        "plan_changes",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("from_plan", sa.String(64), nullable=False),
        sa.Column("to_plan", sa.String(64), nullable=False),
        sa.Column("cycle", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("invoice_id", sa.String(40), nullable=True),
        sa.Column("paid_per_period", sa.BigInteger(), nullable=False),
        sa.Column("new_per_period", sa.BigInteger(), nullable=False),
        sa.Column("exact_owed", sa.String(100), nullable=False),
        sa.Column("currency", sa.String(8), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("code", sa.String(64), nullable=True),
        sa.Column("quoted_at", sa.DateTime(), nullable=False),
        sa.Column("effective_at", sa.DateTime(), nullable=True),
        sa.Column("applied_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_plan_changes_subscription_id_subscriptions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_changes")),
        sa.UniqueConstraint("subscription_id", "idempotency_key", name="uq_plan_changes_idempotency"),
    )
    op.create_index(op.f("ix_plan_changes_subscription_id"), "plan_changes", ["subscription_id"])
    op.create_index(op.f("ix_plan_changes_customer_id"), "plan_changes", ["customer_id"])
    op.create_table(
        "codes",
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("percent", sa.Integer(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(8), nullable=True),
        sa.Column("plans", sa.JSON(), nullable=False),
        sa.Column("duration", sa.String(16), nullable=False),
        sa.Column("max_redemptions", sa.Integer(), nullable=True),
        sa.Column("redemptions", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("disabled_at", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_codes")),
    )
    op.create_table(
        "code_redemptions",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("code", sa.String(64), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("subscription_id", sa.String(40), nullable=True),
        sa.Column("license_id", sa.String(40), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["code"], ["codes.code"], name=op.f("fk_code_redemptions_code_codes")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_redemptions")),
        sa.UniqueConstraint("code", "customer_id", name="uq_code_redemptions_customer"),
    )
    op.create_index(op.f("ix_code_redemptions_code"), "code_redemptions", ["code"])
    op.create_index(op.f("ix_code_redemptions_customer_id"), "code_redemptions", ["customer_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_code_redemptions_customer_id"), table_name="code_redemptions")
    op.drop_index(op.f("ix_code_redemptions_code"), table_name="code_redemptions")
    op.drop_table("code_redemptions")
    op.drop_table("codes")
    op.drop_index(op.f("ix_plan_changes_customer_id"), table_name="plan_changes")
    op.drop_index(op.f("ix_plan_changes_subscription_id"), table_name="plan_changes")
    op.drop_table("plan_changes")
    with op.batch_alter_table("invoices") as b:
        b.drop_constraint("uq_invoices_cycle_kind", type_="unique")
        b.create_unique_constraint("uq_invoices_cycle", ["subscription_id", "cycle"])
        b.drop_column("discount_amount")
        b.drop_column("discount_code")
        b.drop_column("seq")
        b.drop_column("kind")
    with op.batch_alter_table("subscriptions") as b:
        b.drop_column("discount_code")
        b.drop_column("period_price")
