"""Engine and the session scope: the only place that commits or rolls back.

SQLite runs in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
PostgreSQL uses the psycopg 3 driver and row locks (``FOR UPDATE``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

__all__ = ["Database", "Tx", "normalize_url"]


class Tx(Session):
    """The transaction a unit of work runs in: Core statements only.

    The write path issues SAVEPOINTs on the driver cursor (kit/executor.py), which the ORM's
    unit of work would not know about: an object added to the session and flushed later would
    be written outside its command's savepoint, or after a rollback. So the ORM's change
    tracking is off here: ``add``/``merge``/``delete``/``flush`` raise instead of silently
    breaking the group commit. Use ``execute(insert(...))`` / ``update`` / ``select``.
    """

    def _core_only(self, what: str) -> TypeError:
        return TypeError(f"Tx.{what}: units of work run Core statements only (see kit/db.py)")

    def add(self, instance: object, _warn: bool = True) -> None:
        raise self._core_only("add")

    def add_all(self, instances: Iterable[object]) -> None:
        raise self._core_only("add_all")

    def merge(self, instance: Any, *args: Any, **kwargs: Any) -> Any:
        raise self._core_only("merge")

    def delete(self, instance: object) -> None:
        raise self._core_only("delete")

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        if self.new or self.dirty or self.deleted:  # never true: add/merge/delete refuse
            raise self._core_only("flush")


def normalize_url(url: str) -> str:
    """Accept ``postgres://`` and ``postgresql://`` and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    return url


class Database:
    def __init__(self, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 16) -> None:
        self.url = normalize_url(url)
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if parsed.database in (None, "", ":memory:"):
                raise ValueError(
                    "use a file for SQLite (in-memory databases are not shared between connections)"
                )
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._setup_sqlite(self.engine, sqlite_synchronous)
        self._factory = sessionmaker(self.engine, class_=Tx, expire_on_commit=False)

    @staticmethod
    def _setup_sqlite(engine: Engine, synchronous: str) -> None:
        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: sqlite3.Connection, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    def session(self, *, write: bool = False) -> Tx:
        s = self._factory()
        if self.is_sqlite and write:
            s.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
        return s

    @contextmanager
    def scope(self, *, write: bool = True) -> Iterator[Tx]:
        """A unit of work: commits when the block ends, rolls back on any exception."""
        s = self.session(write=write)
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()

    @classmethod
    def null_pool(cls, url: str) -> Engine:
        return create_engine(normalize_url(url), poolclass=NullPool)
