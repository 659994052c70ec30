"""All of the outbox's SQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, func, insert, select, update

from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement
from tollkeep.outbox.models import OutboxEvent

__all__ = ["add", "add_once", "any_due", "claim", "count_pending", "mark_delivered", "mark_failed", "recent"]

O = table_of(OutboxEvent)  # noqa: E741
# prebuilt (kit/rawsql.py): events are written inside other units of work, often several per
# unit (a payment applied by the inbox worker writes three), on the single SQLite writer
_ADD = RawStatement(insert(O).values({c.name: bindparam(c.name) for c in O.columns}))


def add(s: Tx, *, topic: str, customer_id: str | None, payload: dict[str, Any], now: datetime) -> str:
    """Write one event in the caller's transaction: it commits, or rolls back, with the change."""
    event_id = new_id("evt")
    _ADD.execute(
        s,
        {
            "id": event_id,
            "topic": topic,
            "customer_id": customer_id,
            "payload": payload,
            "created_at": now,
            "available_at": now,
            "delivered_at": None,
            "attempts": 0,
            "last_error": None,
        },
    )
    return event_id


def add_once(
    s: Tx,
    *,
    id: str,
    topic: str,
    customer_id: str | None,
    payload: dict[str, Any],
    created_at: datetime,
    now: datetime,
) -> bool:
    """Write one event with a caller-chosen ``id`` unless a row with that id exists (one
    statement, so two writers racing on one id never both insert); True when this one went in.
    For events derived from committed facts by a scan (postpaid usage for Stripe)."""
    from sqlalchemy.dialects.postgresql import insert as pg_insert
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    make = pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = (
        make(O)
        .values(
            id=id,
            topic=topic,
            customer_id=customer_id,
            payload=payload,
            created_at=created_at,
            available_at=now,
            delivered_at=None,
            attempts=0,
            last_error=None,
        )
        .on_conflict_do_nothing()
        .returning(O.c.id)
    )
    return s.execute(stmt).first() is not None


def _due(now: datetime) -> Any:
    return (O.c.delivered_at.is_(None), O.c.available_at <= now)


def any_due(s: Tx, now: datetime) -> bool:
    """A cheap read: is there anything to claim? (An idle dispatcher writes nothing.)"""
    return s.execute(select(O.c.id).where(*_due(now)).limit(1)).first() is not None


def claim(s: Tx, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
    """Take up to ``limit`` undelivered rows, oldest first, and lease them until ``lease_until``
    (one more attempt each). On PostgreSQL the rows are read with ``FOR UPDATE SKIP LOCKED``: two
    dispatchers claiming at once get disjoint rows, neither waits, and once this transaction
    commits the lease keeps the rows from everyone else; SQLite has one writer. A dispatcher that
    dies holding a lease gives its rows back when the lease runs out."""
    rows = s.execute(
        select(O).where(*_due(now)).order_by(O.c.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    s.execute(update(O).where(O.c.id.in_(ids)).values(available_at=lease_until, attempts=O.c.attempts + 1))
    return [
        SimpleNamespace(**{**r._asdict(), "attempts": r.attempts + 1, "available_at": lease_until})
        for r in rows
    ]


def mark_delivered(s: Tx, ids: Sequence[str], now: datetime) -> int:
    if not ids:
        return 0
    res = s.execute(
        update(O)
        .where(O.c.id.in_(list(ids)), O.c.delivered_at.is_(None))
        .values(delivered_at=now, last_error=None)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def mark_failed(s: Tx, event_id: str, error: str, retry_at: datetime) -> None:
    s.execute(
        update(O)
        .where(O.c.id == event_id, O.c.delivered_at.is_(None))
        .values(available_at=retry_at, last_error=error)
    )


def count_pending(s: Tx) -> int:
    return int(s.execute(select(func.count()).select_from(O).where(O.c.delivered_at.is_(None))).scalar_one())


def recent(s: Tx, *, limit: int = 100, topic: str | None = None, pending: bool = False) -> list[Any]:
    stmt = select(O).order_by(O.c.id.desc()).limit(limit)
    if topic is not None:
        stmt = stmt.where(O.c.topic == topic)
    if pending:
        stmt = stmt.where(O.c.delivered_at.is_(None))
    return list(s.execute(stmt).all())
