"""The journal is append-only, enforced by the database: UPDATE and DELETE are refused.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MESSAGE = "journal_entries is append-only: write a correcting entry instead"


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER journal_no_{action.lower()} BEFORE {action} ON journal_entries "
                f"BEGIN SELECT RAISE(ABORT, '{MESSAGE}'); END"
            )
    else:
        op.execute(
            "CREATE FUNCTION tollkeep_journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN RAISE EXCEPTION '{MESSAGE}'; END $$"
        )
        op.execute(
            "CREATE TRIGGER journal_append_only BEFORE UPDATE OR DELETE ON journal_entries "
            "FOR EACH ROW EXECUTE FUNCTION tollkeep_journal_append_only()"
        )
        op.execute(
            "CREATE TRIGGER journal_no_truncate BEFORE TRUNCATE ON journal_entries "
            "FOR EACH STATEMENT EXECUTE FUNCTION tollkeep_journal_append_only()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS journal_no_update")
        op.execute("DROP TRIGGER IF EXISTS journal_no_delete")
    else:
        op.execute("DROP TRIGGER IF EXISTS journal_append_only ON journal_entries")
        op.execute("DROP TRIGGER IF EXISTS journal_no_truncate ON journal_entries")
        op.execute("DROP FUNCTION IF EXISTS tollkeep_journal_append_only()")
