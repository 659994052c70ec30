"""Storage: migrations, and what the database itself guarantees."""

from __future__ import annotations

import warnings

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from tollkeep.kit.migrate import current_revision, head_revision, upgrade
from tollkeep.runtime import Tollkeep


def test_migrated_to_head_and_idempotent(tk: Tollkeep) -> None:
    assert current_revision(tk.db) == head_revision()
    assert upgrade(tk.db) == head_revision()  # a second run changes nothing


def test_the_migrations_run_up_down_and_up_again_with_data(bare_db_url: str) -> None:
    """Every migration, from an empty database (test runtimes start from a copy of one migrated
    database, so this is where the chain itself runs), then every downgrade with a customer's
    money in the tables (a rebuild of a referenced table would trip its foreign keys), then up."""
    from alembic import command

    from tollkeep.config import Settings
    from tollkeep.kit.db import Database
    from tollkeep.kit.migrate import alembic_config

    db = Database(bare_db_url)
    try:
        assert current_revision(db) is None
        assert upgrade(db) == head_revision()
        tk = Tollkeep(Settings(database_url=bare_db_url, run_workers=False))
        try:
            cid = tk.customers.create("through-the-chain")["id"]
            tk.ledger.grant(cid, 50, idempotency_key="g")
        finally:
            tk.close()
        cfg = alembic_config()
        with db.engine.connect() as conn, conn.begin():
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0009")
        assert current_revision(db) == "0009"
        assert upgrade(db) == head_revision()
        tk = Tollkeep(Settings(database_url=bare_db_url, run_workers=False))
        try:
            assert tk.balance(cid)["balance"] == 50
            assert tk.verify().ok
        finally:
            tk.close()
    finally:
        db.engine.dispose()


@pytest.mark.parametrize(
    "statement", ["UPDATE journal_entries SET delta = delta + 1", "DELETE FROM journal_entries"]
)
def test_journal_is_append_only(tk: Tollkeep, statement: str) -> None:
    cid = tk.customers.create("append-only")["id"]
    tk.ledger.grant(cid, 5, idempotency_key="g")
    with pytest.raises(DBAPIError, match="append-only"), tk.db.scope() as s:
        s.execute(text(statement))
    assert tk.balance(cid)["balance"] == 5


def test_sqlite_runs_in_wal_mode(tk: Tollkeep) -> None:
    if not tk.db.is_sqlite:
        pytest.skip("SQLite only")
    with tk.db.scope(write=False) as s:
        assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1


def test_models_and_migrations_agree(tk: Tollkeep) -> None:
    """The migrated schema is what the models declare: no table, column, type or index that a
    migration forgot (Alembic's autogenerate comparison finds nothing to do)."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from tollkeep.kit.schema import metadata

    with tk.db.engine.connect() as conn, warnings.catch_warnings():
        # SQLite's reflection skips an index on an expression (ix_grants_spend), and so does
        # autogenerate: both say so, and compare the rest
        warnings.filterwarnings("ignore", "Skipped unsupported reflection of expression-based index")
        warnings.filterwarnings("ignore", "autogenerate skipping metadata-specified expression-based index")
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), metadata)
    assert diff == []
