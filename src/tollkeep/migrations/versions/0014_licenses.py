"""Licensing: signing keys, licences, machines.

Revision ID: 0014
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "license_signing_keys",
        sa.Column("kid", sa.String(40), nullable=False),
        sa.Column("public_x", sa.String(64), nullable=False),
        sa.Column("private_pem", sa.Text(), nullable=False),
        sa.Column("encrypted", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("retired_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("kid", name=op.f("pk_license_signing_keys")),
    )
    op.create_table(
        "licenses",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("customer_id", sa.String(40), nullable=False),
        sa.Column("plan", sa.String(64), nullable=False),
        sa.Column("entitlements", sa.JSON(), nullable=False),
        sa.Column("max_machines", sa.Integer(), nullable=True),
        sa.Column("expires_at", sa.DateTime(), nullable=True),
        sa.Column("grace_seconds", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("key_version", sa.Integer(), nullable=False),
        sa.Column("note", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["customer_id"], ["customers.id"], name=op.f("fk_licenses_customer_id_customers")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licenses")),
    )
    op.create_index(op.f("ix_licenses_customer_id"), "licenses", ["customer_id"])
    op.create_table(
        "license_machines",
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("license_id", sa.String(40), nullable=False),
        sa.Column("fingerprint_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("activated_at", sa.DateTime(), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(), nullable=False),
        sa.Column("deactivated_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["license_id"], ["licenses.id"], name=op.f("fk_license_machines_license_id_licenses")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_license_machines")),
        sa.UniqueConstraint("license_id", "fingerprint_hash", name="uq_license_machines_fp"),
    )
    op.create_index(op.f("ix_license_machines_license_id"), "license_machines", ["license_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_license_machines_license_id"), table_name="license_machines")
    op.drop_table("license_machines")
    op.drop_index(op.f("ix_licenses_customer_id"), table_name="licenses")
    op.drop_table("licenses")
    op.drop_table("license_signing_keys")
