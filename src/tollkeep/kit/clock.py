"""Time source. Services take a Clock so tests can move time without sleeping."""

from __future__ import annotations

import calendar
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "Clock",
    "FrozenClock",
    "OffsetClock",
    "SubscriptionPeriods",
    "SystemClock",
    "add_months",
    "iso",
    "month_bounds",
    "period_bounds",
    "usage_period",
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


# ---- a subscription's own periods (caps and tier counters of a subscribed wallet) -------------
def add_months(anchor: datetime, n: int) -> datetime:
    """``anchor`` + ``n`` months (``n`` may be negative), always counted from the anchor, the day
    clamped to the month's last: Jan 31 → Feb 28 (29 in a leap year) → Mar 31. The rule of
    ``subscriptions.domain.add_periods`` (a property test holds the two equal)."""
    total = anchor.month - 1 + n
    year, month = anchor.year + total // 12, total % 12 + 1
    return anchor.replace(year=year, month=month, day=min(anchor.day, calendar.monthrange(year, month)[1]))


@dataclass(frozen=True, slots=True)
class SubscriptionPeriods:
    """A subscribed wallet's periods, as the wallet row carries them (``wallets.period_*``,
    written by the plans domain with the subscription's moves).

    ``anchor``: where the subscription's paid cycles start (its start, or the end of its trial);
    ``since``: where its first period starts (its start; before ``anchor`` with a trial);
    ``until``: the periods apply up to here, exclusive (the current cycle's end + the plan's
    grace: when an unpaid subscription lapses). Outside [since, until), calendar periods."""

    anchor: datetime
    since: datetime
    until: datetime


_SUB_MONTHS = {"month": 1, "year": 12}
_SUB_PREFIX = {"month": "sm:", "year": "sy:"}


def usage_period(
    period: str, now: datetime, sub: SubscriptionPeriods | None = None
) -> tuple[datetime | None, datetime | None, str]:
    """The period of a meter counter (caps, tiered rating) holding ``now``: (start, end, key).

    Without ``sub``, or outside [``sub.since``, ``sub.until``): the calendar period
    (:func:`period_bounds`). With it, a ``month`` or ``year`` is the subscription's own: counted
    from ``sub.anchor`` in whole months (years), the day clamped at month ends like the billing
    cycles (:func:`add_months`); a trial, [``since``, ``anchor``), is one period (the
    subscription's cycle 1, whatever its length); the key is ``sm:`` / ``sy:`` and the start
    (UTC, to the microsecond). For a
    monthly plan a ``month`` is its billing cycle; in a yearly plan the months are anchored at
    the subscription's anchor. ``day`` stays the UTC day and ``lifetime`` the lifetime."""
    months = _SUB_MONTHS.get(period)
    if sub is None or months is None or not sub.since <= now < sub.until:
        return period_bounds(period, now)
    a = sub.anchor
    if now < a:  # a trial: cycle 1, one period
        return sub.since, a, _SUB_PREFIX[period] + _stamp(sub.since)
    k = ((now.year - a.year) * 12 + now.month - a.month) // months
    while add_months(a, k * months) > now:
        k -= 1
    while add_months(a, (k + 1) * months) <= now:
        k += 1
    start, end = add_months(a, k * months), add_months(a, (k + 1) * months)
    return start, end, _SUB_PREFIX[period] + _stamp(start)


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
