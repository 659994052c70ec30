"""Helpers shared by the subscriptions tests (a test module imports no other test module)."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tollkeep.outbox.models import OutboxEvent
from tollkeep.runtime import Tollkeep


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def advance(c: TestClient, until: datetime | None = None, seconds: int | None = None) -> dict[str, Any]:
    if seconds is None:
        assert until is not None
        now = at(c.get("/admin/test-clock").json()["now"])
        seconds = int((until - now).total_seconds()) + 1
    r = c.post("/admin/test-clock", json={"advance_seconds": seconds})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def expected(paid: int, new: int, start: datetime, end: datetime, now: datetime) -> int:
    """The documented rule, computed independently: (new - paid) * seconds left / period seconds,
    rounded once, half up."""
    left = Decimal((end - now) // timedelta(microseconds=1))
    total = Decimal((end - start) // timedelta(microseconds=1))
    return int(((new - paid) * left / total).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def topics(tk: Tollkeep) -> list[tuple[str, dict[str, Any]]]:
    ob = OutboxEvent.__table__
    with tk.db.scope(write=False) as s:
        return [
            (r.topic, r.payload) for r in s.execute(select(ob.c.topic, ob.c.payload).order_by(ob.c.id)).all()
        ]
