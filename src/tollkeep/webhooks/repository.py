"""All of the webhooks domain's SQL: ``webhook_endpoints``, ``webhook_deliveries`` and
``webhook_attempts`` are written here and nowhere else."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "add_attempts",
    "add_deliveries",
    "any_due",
    "any_enabled",
    "claim",
    "delete_endpoint",
    "finish",
    "get_delivery",
    "get_endpoint",
    "insert_endpoint",
    "list_endpoints",
    "requeue",
    "set_endpoint",
    "subscribers",
]

E = table_of(WebhookEndpoint)
D = table_of(WebhookDelivery)
A = table_of(WebhookAttempt)

ENABLED = "enabled"
ACTIVE = ("pending", "sending")


# ---- endpoints --------------------------------------------------------------------------------------
def insert_endpoint(s: Tx, row: dict[str, Any]) -> None:
    s.execute(insert(E).values(**row))


def get_endpoint(s: Tx, endpoint_id: str) -> Any:
    return s.execute(select(E).where(E.c.id == endpoint_id)).first()


def list_endpoints(s: Tx) -> list[Any]:
    return list(s.execute(select(E).order_by(E.c.id)))


def set_endpoint(s: Tx, endpoint_id: str, **values: Any) -> None:
    s.execute(update(E).where(E.c.id == endpoint_id).values(**values))


def delete_endpoint(s: Tx, endpoint_id: str) -> None:
    """The endpoint, its deliveries and their attempt logs."""
    ids = select(D.c.id).where(D.c.endpoint_id == endpoint_id)
    s.execute(delete(A).where(A.c.delivery_id.in_(ids)))
    s.execute(delete(D).where(D.c.endpoint_id == endpoint_id))
    s.execute(delete(E).where(E.c.id == endpoint_id))


def any_enabled(s: Tx) -> bool:
    return s.execute(select(E.c.id).where(E.c.status == ENABLED).limit(1)).first() is not None


def subscribers(s: Tx, created_before: datetime) -> list[Any]:
    """The enabled endpoints that existed when an event was written: (id, events)."""
    stmt = select(E.c.id, E.c.events).where(E.c.status == ENABLED, E.c.created_at <= created_before)
    return list(s.execute(stmt))


# ---- deliveries -------------------------------------------------------------------------------------
def add_deliveries(s: Tx, rows: Sequence[dict[str, Any]]) -> int:
    """Insert deliveries, skipping any (endpoint, event) that has one already: an event offered
    again (the outbox delivers at least once) adds nothing. Returns how many were new."""
    if not rows:
        return 0
    dialect = s.get_bind().dialect.name
    maker = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = maker(D).values(list(rows)).on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
    return int(s.execute(stmt).rowcount)  # type: ignore[attr-defined]


def _due(now: datetime) -> Any:
    return D.c.next_attempt_at <= now


def any_due(s: Tx, now: datetime) -> bool:
    """A cheap read: is there anything to claim? (An idle deliverer writes nothing.)"""
    return s.execute(select(D.c.id).where(_due(now)).limit(1)).first() is not None


def claim(
    s: Tx, now: datetime, lease_until: datetime, limit: int, *, only: Sequence[str] | None = None
) -> list[Any]:
    """Take up to ``limit`` due deliveries of enabled endpoints (``pending`` and due, or
    ``sending`` with a lease that ran out: its deliverer died), lease them until ``lease_until``
    as ``sending`` with one more attempt, and return them with their endpoint's URL and secrets.
    On PostgreSQL the rows are read ``FOR UPDATE SKIP LOCKED``: two deliverers get disjoint rows,
    and once this commits the lease keeps the rows from everyone else."""
    enabled = select(E.c.id).where(E.c.status == ENABLED)
    stmt = (
        select(D.c.id, D.c.endpoint_id, D.c.event_id, D.c.topic, D.c.body, D.c.attempts, D.c.round_start)
        .where(_due(now), D.c.endpoint_id.in_(enabled))
        .order_by(D.c.next_attempt_at, D.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if only is not None:
        stmt = stmt.where(D.c.id.in_(list(only)))
    rows = s.execute(stmt).all()
    if not rows:
        return []
    ids = [r.id for r in rows]
    s.execute(
        update(D)
        .where(D.c.id.in_(ids))
        .values(status="sending", next_attempt_at=lease_until, attempts=D.c.attempts + 1, last_attempt_at=now)
    )
    endpoints = {
        e.id: e
        for e in s.execute(
            select(E.c.id, E.c.url, E.c.secret, E.c.previous_secret, E.c.previous_secret_until).where(
                E.c.id.in_({r.endpoint_id for r in rows})
            )
        )
    }
    return [
        SimpleNamespace(**r._asdict(), attempt=r.attempts + 1, endpoint=endpoints[r.endpoint_id])
        for r in rows
    ]


def finish(s: Tx, delivery_id: str, attempt: int, **values: Any) -> bool:
    """Record the outcome of attempt ``attempt``, if the row is still this attempt's (a lease
    that ran out may have been taken over: then the newer attempt's outcome stands)."""
    res = s.execute(
        update(D)
        .where(D.c.id == delivery_id, D.c.attempts == attempt, D.c.status == "sending")
        .values(**values)
    )
    return int(res.rowcount) == 1  # type: ignore[attr-defined]


def add_attempts(s: Tx, rows: Sequence[dict[str, Any]]) -> None:
    """Log attempts (of deliveries that still exist: an endpoint deleted mid-send takes its log)."""
    if not rows:
        return
    live = set(s.execute(select(D.c.id).where(D.c.id.in_({r["delivery_id"] for r in rows}))).scalars())
    kept = [r for r in rows if r["delivery_id"] in live]
    if kept:
        s.execute(insert(A), kept)


def get_delivery(s: Tx, delivery_id: str) -> Any:
    return s.execute(select(D).where(D.c.id == delivery_id)).first()


def requeue(s: Tx, delivery_id: str, now: datetime) -> None:
    """A redelivery: due now, with a new round of the retry schedule."""
    s.execute(
        update(D)
        .where(D.c.id == delivery_id)
        .values(status="pending", next_attempt_at=now, round_start=D.c.attempts)
    )


def count_active(s: Tx, endpoint_id: str) -> int:
    return int(
        s.execute(
            select(func.count()).select_from(D).where(D.c.endpoint_id == endpoint_id, D.c.status.in_(ACTIVE))
        ).scalar_one()
    )
