"""Time source. Services take a Clock so tests can move time without sleeping."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = [
    "Clock",
    "FrozenClock",
    "OffsetClock",
    "SystemClock",
    "iso",
    "month_bounds",
    "period_bounds",
    "utcnow",
]


def iso(dt: datetime | None) -> str | None:
    """An aware datetime as ISO 8601 with a ``Z`` (how every API response writes times)."""
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def utcnow() -> datetime:
    return datetime.now(UTC)


class Clock:
    def now(self) -> datetime:
        raise NotImplementedError


class SystemClock(Clock):
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock(Clock):
    """A clock that only moves when told to (for tests and simulations)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now = self._now + delta
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = when


class OffsetClock(Clock):
    """Another clock moved forward by an offset that only grows: the test clock
    (``TOLLKEEP_TEST_CLOCK``), which an operator advances over HTTP like Stripe's test clocks."""

    def __init__(self, base: Clock) -> None:
        self.base = base
        self._offset = timedelta(0)
        self._lock = threading.Lock()

    @property
    def offset(self) -> timedelta:
        with self._lock:
            return self._offset

    def now(self) -> datetime:
        return self.base.now() + self.offset

    def advance(self, delta: timedelta) -> datetime:
        if delta < timedelta(0):
            raise ValueError("the test clock only moves forward")
        with self._lock:
            self._offset += delta
        return self.now()


def month_bounds(now: datetime) -> tuple[datetime, datetime]:
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )
    return start, end


def period_bounds(period: str, now: datetime) -> tuple[datetime | None, datetime | None, str]:
    """Calendar period (UTC) containing ``now``: (start, end, key). Lifetime has no bounds."""
    if period == "lifetime":
        return None, None, "life"
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1), "d:" + start.strftime("%Y-%m-%d")
    if period == "month":
        start, end = month_bounds(now)
        return start, end, "m:" + start.strftime("%Y-%m")
    if period == "year":
        start = now.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
        return start, start.replace(year=start.year + 1), "y:" + start.strftime("%Y")
    raise ValueError(f"unknown period {period!r}")
