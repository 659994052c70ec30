"""Shared fixtures. Every test that gets a runtime runs on SQLite and, when the server answers,
on PostgreSQL (TOLLKEEP_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/test), each
in a fresh database (a temporary file / a temporary schema). After each test the ledger is
verified from the journal: a test that leaves balances and journal disagreeing fails."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event

from tollkeep.app import create_app
from tollkeep.config import Settings
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.db import Database
from tollkeep.kit.migrate import upgrade
from tollkeep.runtime import Tollkeep

PG_URL = os.environ.get("TOLLKEEP_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
ADMIN = "test-admin-token"
_pg_state: dict[str, str | None] = {}


def pg_unavailable() -> str | None:
    """None when PostgreSQL answers, else why not (cached)."""
    if "why" not in _pg_state:
        if os.environ.get("TOLLKEEP_TEST_PG", "1") == "0":
            _pg_state["why"] = "TOLLKEEP_TEST_PG=0"
        else:
            try:
                import psycopg

                with psycopg.connect(
                    PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3
                ) as c:
                    c.execute("select 1")
                _pg_state["why"] = None
            except Exception as exc:
                _pg_state["why"] = f"PostgreSQL at {PG_URL} does not answer ({type(exc).__name__})"
    return _pg_state["why"]


@pytest.fixture
def pg_schema_url() -> Iterator[str]:
    why = pg_unavailable()
    if why:
        pytest.skip(f"skipping PostgreSQL run: {why}")
    import psycopg

    schema = "t_" + uuid.uuid4().hex[:12]
    raw = PG_URL.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(raw, autocommit=True) as c:
        c.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    with psycopg.connect(raw, autocommit=True) as c:
        c.execute(f"DROP SCHEMA {schema} CASCADE")


# Migrating a fresh database is most of a runtime's start (Alembic, ~290 operations, SQLite's
# batch table rebuilds). A test's database is therefore made from the real migrations run once
# per test process: SQLite copies the migrated file, PostgreSQL replays the statements the
# migrations executed (recorded from the engine, so nothing is written twice by hand). The
# runtime then finds its schema at head. `pg_schema_url` itself stays an empty schema, and the
# CLI tests still migrate fresh databases through `tollkeep init` / `migrate` / `serve`.
_template: dict[str, Any] = {}


def _sqlite_template(factory: pytest.TempPathFactory) -> Path:
    if "sqlite" not in _template:
        path = factory.mktemp("template") / "migrated.db"
        db = Database(f"sqlite:///{path}")
        try:
            upgrade(db)
        finally:
            db.engine.dispose()
        _template["sqlite"] = path
    return Path(_template["sqlite"])


def _pg_statements(raw: str) -> list[tuple[str, Any, bool]]:
    if "postgres" not in _template:
        import psycopg

        schema = "t_tmpl_" + uuid.uuid4().hex[:12]
        with psycopg.connect(raw, autocommit=True) as c:
            c.execute(f"CREATE SCHEMA {schema}")
        sep = "&" if "?" in PG_URL else "?"
        db = Database(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
        seen: list[tuple[str, Any, bool]] = []

        @event.listens_for(db.engine, "before_cursor_execute")
        def _record(_c: Any, _cur: Any, statement: str, params: Any, _ctx: Any, many: bool) -> None:
            seen.append((statement, params, many))

        try:
            upgrade(db)
        finally:
            db.engine.dispose()
            with psycopg.connect(raw, autocommit=True) as c:
                c.execute(f"DROP SCHEMA {schema} CASCADE")
        _template["postgres"] = seen
    return list(_template["postgres"])


def _migrate_pg_schema(raw: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(raw, options=f"-csearch_path={schema}") as c, c.cursor() as cur:
        for statement, params, many in _pg_statements(raw):
            if many:
                cur.executemany(statement, params)
            else:
                cur.execute(statement, params or None)


@pytest.fixture(params=["sqlite", "postgres"])
def bare_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (no schema yet): for the tests of the migrations themselves."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'bare.db'}"
    return str(request.getfixturevalue("pg_schema_url"))


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated database of its own: a SQLite file, or a PostgreSQL schema."""
    if request.param == "sqlite":
        path = tmp_path / "tollkeep.db"
        shutil.copyfile(_sqlite_template(tmp_path_factory), path)
        return f"sqlite:///{path}"
    url = str(request.getfixturevalue("pg_schema_url"))
    schema = url.rsplit("search_path%3D", 1)[1]
    _migrate_pg_schema(PG_URL.replace("postgresql+psycopg", "postgresql"), schema)
    return url


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(datetime.now(UTC).replace(microsecond=0))


def make_settings(db_url: str, **kw: object) -> Settings:
    base: dict[str, object] = {
        "database_url": db_url,
        "admin_token": ADMIN,
        "run_workers": False,
        "key_cache_seconds": 0.0,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def raw_sql(request: pytest.FixtureRequest) -> bool:
    """The ledger's raw-statement fast path (kit/rawsql.py): on, unless a module asks for both
    (tests/ledger/conftest.py runs its parity modules with it off too)."""
    return bool(getattr(request, "param", True))


@contextmanager
def verified_runtime(settings: Settings, clock: FrozenClock | None = None) -> Iterator[Tollkeep]:
    """A runtime that is closed afterwards and whose ledger must then verify from the journal
    (every fixture that hands a test a runtime goes through here)."""
    runtime = Tollkeep(settings, clock=clock)
    try:
        yield runtime
        report = runtime.verify()
        assert report.ok, report.problems
    finally:
        runtime.close()


@pytest.fixture
def tk(db_url: str, clock: FrozenClock, raw_sql: bool) -> Iterator[Tollkeep]:
    with verified_runtime(make_settings(db_url, raw_sql=raw_sql), clock) as runtime:
        yield runtime


@pytest.fixture
def client(tk: Tollkeep) -> Iterator[TestClient]:
    with TestClient(create_app(runtime=tk)) as c:
        c.headers["Authorization"] = f"Bearer {ADMIN}"
        yield c


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say whether the PostgreSQL runs happened — loudly when they were skipped: a green run on
    SQLite alone must not pass for a run on both databases."""
    why = pg_unavailable()
    # counted from the reports, not from this process's fixtures: under pytest-xdist the tests
    # run in worker processes and this hook runs in the controller
    ran = sum(
        1
        for outcome in ("passed", "failed")
        for r in terminalreporter.stats.get(outcome, [])
        if getattr(r, "when", "call") == "call" and ("postgres" in r.nodeid or "postgres" in r.keywords)
    )
    if ran and not why:
        terminalreporter.write_line(
            f"PostgreSQL: tested ({ran} tests run on fresh schemas at {PG_URL}) as well as SQLite", green=True
        )
    elif not why:
        terminalreporter.write_line("PostgreSQL: no test of this selection needed it")
    if why:
        terminalreporter.write_sep("!", "PostgreSQL tests SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"PostgreSQL tests SKIPPED: {why}", red=True, bold=True)
        terminalreporter.write_line(
            "Only SQLite was tested. Start PostgreSQL (or set TOLLKEEP_TEST_PG_URL) to test both.",
            red=True,
        )
        terminalreporter.write_sep("!", red=True, bold=True)
