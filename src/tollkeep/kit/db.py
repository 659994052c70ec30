"""Engine and the session scope: the only place that commits or rolls back.

SQLite runs in WAL mode with a busy timeout; write transactions start with
``BEGIN IMMEDIATE`` so two writers never deadlock on a lock upgrade.
PostgreSQL uses the psycopg 3 driver and row locks (``FOR UPDATE``).
Domain events emitted in a unit of work are delivered here, after the commit (kit/events.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from tollkeep.kit import events
from tollkeep.kit.errors import DatabaseUnavailable

__all__ = ["Database", "Tx", "check_url", "explain_database_error", "normalize_url", "probe"]


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


SUPPORTED = "sqlite:///path/to/file.db or postgresql://user@host:5432/dbname"


def check_url(url: str) -> str:
    """The normalized URL, or :class:`DatabaseUnavailable` saying in one line what is wrong."""
    url = normalize_url(url.strip())
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise DatabaseUnavailable(
            f"the database URL is not a URL; use {SUPPORTED}", code="database_url_invalid"
        ) from None
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if (backend, driver) not in {("sqlite", "pysqlite"), ("postgresql", "psycopg")}:
        raise DatabaseUnavailable(
            f"tollkeep runs on SQLite or PostgreSQL (psycopg 3), not {parsed.drivername!r}; use {SUPPORTED}",
            code="database_url_invalid",
        )
    if backend == "sqlite" and (parsed.host or parsed.database in (None, "", ":memory:")):
        hint = f" (for the file {parsed.host!r}: sqlite:///{parsed.host})" if parsed.host else ""
        raise DatabaseUnavailable(
            "a SQLite URL names a file with three slashes for a relative path, four for an absolute "
            f"one: sqlite:///tollkeep.db, sqlite:////var/lib/tollkeep.db{hint}; in-memory databases "
            "are not shared between connections",
            code="database_url_invalid",
        )
    return url


def explain_database_error(exc: BaseException, url: str) -> DatabaseUnavailable | None:
    """One line for a connection failure the operator can fix (None if it is not one)."""
    if isinstance(exc, DatabaseUnavailable):
        return exc
    if not isinstance(exc, OperationalError):
        return None
    text = str(getattr(exc, "orig", None) or exc)
    where = _printable(url)
    reasons = (
        (
            "unable to open database file",
            "cannot open the SQLite file: does its folder exist and is it writable?",
        ),
        ("Connection refused", "nothing answers there: is PostgreSQL running, on that host and port?"),
        ("failed to resolve host", "the host name does not resolve"),
        ("does not exist", ""),
        ("password authentication failed", "wrong password for that role"),
        ("timeout expired", "the server did not answer in time"),
    )
    for needle, hint in reasons:
        if needle in text:
            if needle == "does not exist":  # FATAL:  role "x" does not exist / database "x" ...
                detail = text.split("FATAL:", 1)[-1].strip().splitlines()[0]
                hint = f"{detail} (create it, or fix the URL)"
            return DatabaseUnavailable(f"database {where}: {hint}")
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return DatabaseUnavailable(f"database {where}: {first}")


def probe(url: str) -> None:
    """Check that ``url`` can be used before anything is written anywhere: a SQLite file's
    folder exists; a PostgreSQL server answers and knows the role and database. Raises
    :class:`DatabaseUnavailable` with one line on what to fix."""
    url = check_url(url)
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        db = parsed.database or ""
        folder = Path(db).parent if not db.startswith("file:") else Path(".")
        if not folder.is_dir():
            raise DatabaseUnavailable(
                f"database {_printable(url)}: the folder {folder} does not exist (create it, or fix the URL)"
            )
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            pass
    except Exception as exc:
        problem = explain_database_error(exc, url)
        if problem is None:
            raise
        raise problem from None
    finally:
        engine.dispose()


def _printable(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


class Database:
    def __init__(
        self, url: str, *, sqlite_synchronous: str = "NORMAL", pool_size: int = 16, raw_sql: bool = True
    ) -> None:
        self.url = check_url(url)
        self.raw_sql = raw_sql
        parsed = make_url(self.url)
        self.dialect = parsed.get_backend_name()
        self.is_sqlite = self.dialect == "sqlite"
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs["pool_size"] = pool_size
            kwargs["max_overflow"] = pool_size
            kwargs["pool_pre_ping"] = True
        self.engine: Engine = create_engine(self.url, **kwargs)
        if self.is_sqlite:
            self._setup_sqlite(self.engine, sqlite_synchronous)
        # ``tk_plain``: run kit.rawsql's statements through Session.execute (see RawStatement)
        self._factory = sessionmaker(
            self.engine, class_=Tx, expire_on_commit=False, info=None if raw_sql else {"tk_plain": True}
        )

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
        """A unit of work: commits when the block ends, rolls back on any exception. Domain
        events emitted in it reach their subscribers after the commit (never after a rollback)."""
        s = self.session(write=write)
        try:
            yield s
            s.commit()
            emitted = events.take(s)
        except BaseException:
            s.rollback()
            events.take(s)
            raise
        finally:
            s.close()
        events.deliver(emitted)

    def dispose(self) -> None:
        self.engine.dispose()

    @classmethod
    def null_pool(cls, url: str) -> Engine:
        return create_engine(normalize_url(url), poolclass=NullPool)
