"""Alembic, driven from code: ``tollkeep migrate`` and the app's start both call :func:`upgrade`.

Two processes starting together do not race: PostgreSQL takes an advisory lock, SQLite
an immediate (write) transaction, before Alembic reads the current revision.
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from tollkeep.kit.db import Database

__all__ = ["alembic_config", "current_revision", "head_revision", "upgrade"]

_LOCK_ID = 7_340_011


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("tollkeep") / "migrations"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(db: Database) -> str | None:
    with db.engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(db: Database, revision: str = "head") -> str | None:
    cfg = alembic_config()
    with db.engine.connect() as conn:
        if db.is_sqlite:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
        with conn.begin():
            if not db.is_sqlite:
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_LOCK_ID})")
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, revision)
    return current_revision(db)


def revision(db: Database, message: str) -> None:  # pragma: no cover - developer tool
    cfg = alembic_config()
    with db.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.revision(cfg, message=message, autogenerate=True)
