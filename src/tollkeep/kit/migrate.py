"""Alembic, driven from code: ``tollkeep migrate`` and the app's start both call :func:`upgrade`.

Two processes starting together do not race: PostgreSQL takes an advisory lock, SQLite
an immediate (write) transaction, before Alembic reads the current revision.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import make_url

from tollkeep.kit.db import Database, check_url
from tollkeep.kit.errors import DatabaseUnavailable

__all__ = [
    "alembic_config",
    "current_revision",
    "head_revision",
    "require_schema",
    "require_sqlite_file",
    "upgrade",
]

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


def require_sqlite_file(url: str) -> None:
    """For commands that only use a database: a SQLite file that is not there is an error, not
    a new empty database."""
    parsed = make_url(check_url(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database.startswith("file:"):
        return
    path = Path(parsed.database)
    if not path.exists():
        raise DatabaseUnavailable(
            f"no tollkeep database at {path.resolve()} (TOLLKEEP_DATABASE_URL or --database): "
            "run `tollkeep init` in your project folder, or point --database at your database",
            code="database_missing",
        )


def require_schema(db: Database) -> None:
    """The database holds tollkeep's schema at this version's revision, or say what to run."""
    have, want = current_revision(db), head_revision()
    if have == want:
        return
    where = make_url(db.url).render_as_string(hide_password=True)
    if have is None:
        raise DatabaseUnavailable(
            f"{where} has no tollkeep schema: run `tollkeep migrate` (or `tollkeep init`)",
            code="database_not_migrated",
        )
    raise DatabaseUnavailable(
        f"{where} is at schema revision {have}, this tollkeep needs {want}: run `tollkeep migrate`",
        code="database_not_migrated",
    )


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
