"""Prebuilt statements executed straight on the DBAPI cursor, for the ledger's hot path.

SQLAlchemy's per-execution machinery (execution context, cache-key check, result proxy) costs
about 20 µs a statement even for a prebuilt statement; the driver itself needs 2-5 µs. A
charge runs about seven statements, so on the single SQLite writer that overhead is most of
the work. A :class:`RawStatement` is compiled once per dialect by SQLAlchemy, and keeps
SQLAlchemy's own type processors, so values are stored and read exactly as the ORM and Core
would (datetimes, JSON, decimals): only the per-call bookkeeping is skipped.

The fast path may change cost, never meaning: with ``Settings.raw_sql`` off
(``TOLLKEEP_RAW_SQL=0``) the very same statements go through SQLAlchemy's plain
``Session.execute``, and the parity tests run the ledger suite both ways.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy.engine import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.base import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.selectable import Select

from tollkeep.kit.db import Tx

__all__ = ["RawRow", "RawStatement", "driver_cursor"]


class RawRow:
    """A result row with attribute access, like SQLAlchemy's Row."""

    __slots__ = ("_map",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        object.__setattr__(self, "_map", mapping)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._map[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._map.get(name, default)

    def _asdict(self) -> dict[str, Any]:
        return dict(self._map)


class RawStatement:
    """One statement, compiled lazily for each dialect it meets."""

    def __init__(self, stmt: ClauseElement) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def _for(self, dialect: Dialect) -> _Compiled:
        c = self._compiled.get(dialect.name)
        if c is None:
            c = self._compiled[dialect.name] = _Compiled(self.stmt, dialect)
        return c

    def execute(self, s: Tx, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        fast = _fast_path(s)
        if fast is None:
            return self._plain(s, params)
        return self._run(fast, params)[0]

    def rows(self, s: Tx, params: Mapping[str, Any]) -> list[RawRow] | list[Any]:
        fast = _fast_path(s)
        if fast is None:
            return list(self._plain(s, params).all())
        cur, c = self._run(fast, params)
        return [c.row(r) for r in cur.fetchall()]

    def first(self, s: Tx, params: Mapping[str, Any]) -> Any:
        fast = _fast_path(s)
        if fast is None:
            return self._plain(s, params).first()
        cur, c = self._run(fast, params)
        r = cur.fetchone()
        return None if r is None else c.row(r)

    def _run(
        self, fast: tuple[Any, Dialect], params: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> tuple[Any, _Compiled]:
        cur, dialect = fast
        c = self._for(dialect)
        if isinstance(params, Mapping):
            cur.execute(c.sql, c.args(params))
        elif len(params) == 1:  # psycopg's executemany costs extra round trips (a pipeline)
            cur.execute(c.sql, c.args(params[0]))
        else:
            cur.executemany(c.sql, [c.args(p) for p in params])
        return cur, c

    def _plain(self, s: Tx, params: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> Any:
        """The same statement through SQLAlchemy's ``Session.execute``, binds left out as NULL."""
        nulls = self._for(s.get_bind().dialect).nulls
        stmt = cast(Executable, self.stmt)
        if isinstance(params, Mapping):
            return s.execute(stmt, {**nulls, **params})
        return s.execute(stmt, [{**nulls, **p} for p in params])


def _fast_path(s: Tx) -> tuple[Any, Dialect] | None:
    """The driver cursor and dialect RawStatements run on, or None when the fast path is off
    for this session (``Database(raw_sql=False)``: then they go through ``Session.execute``)."""
    info = s.info
    fast = info.get("tk_fast")
    if fast is None:
        if info.get("tk_plain"):
            return None
        fast = info["tk_fast"] = driver_cursor(s)
    return fast


class _Compiled:
    def __init__(self, stmt: ClauseElement, dialect: Dialect) -> None:
        compiled = cast(SQLCompiler, stmt.compile(dialect=dialect))
        self.sql = str(compiled)
        self.positional = bool(compiled.positional)
        binds = compiled.binds
        self.names: list[str] = list(compiled.positiontup or []) if self.positional else list(binds)
        # literal values in the statement (``remaining > 0``) are binds with a value of their own
        self.defaults: dict[str, Any] = {n: v for n, v in compiled.params.items() if v is not None}
        # for Session.execute: the named binds a caller left out (literals keep their value)
        self.nulls: dict[str, None] = {
            b.key: None for b in compiled.bind_names if b.value is None and b.callable is None
        }
        self.binders: dict[str, Callable[[Any], Any]] = {}
        for name in self.names:
            bind = binds[name]
            proc = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.binders[name] = proc
        self.plan: list[tuple[str, Any]] = [(n, self.binders.get(n)) for n in self.names]
        self.columns: list[tuple[str, Any]] = []
        if isinstance(stmt, Select):
            for col in stmt.selected_columns:
                proc = col.type.dialect_impl(dialect).result_processor(dialect, None)
                self.columns.append((str(col.key), proc))

    def args(self, params: Mapping[str, Any]) -> Any:
        if self.defaults:
            params = {**self.defaults, **params}
        get = params.get
        if self.positional:
            return [get(n) if p is None else p(get(n)) for n, p in self.plan]
        return {n: (get(n) if p is None else p(get(n))) for n, p in self.plan}

    def row(self, values: Sequence[Any]) -> RawRow:
        return RawRow(
            {k: (p(v) if p is not None else v) for (k, p), v in zip(self.columns, values, strict=True)}
        )


def driver_cursor(s: Tx) -> tuple[Any, Dialect]:
    """A cursor of the DBAPI connection behind the session's transaction, and its dialect.
    Kept in ``session.info`` for the session's life (a unit of work, or a batch of them)."""
    info = s.info
    cur = info.get("tk_cursor")
    if cur is None:
        conn = s.connection()
        cur = info["tk_cursor"] = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        info["tk_dialect"] = conn.dialect
    return cur, info["tk_dialect"]
