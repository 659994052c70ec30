"""The counter periods of a subscribed wallet, pure (issue #10): ``kit.clock.usage_period`` driven
by hypothesis across subscription anchors (the 29th to 31st, Feb 29 of leap years, any time of
day, UTC), checked against the subscriptions domain's own billing cycles
(``subscriptions.domain.cycle_bounds``: the real rule, not a copy) and against the cap and
counter rules the ledger applies (``ledger.rules.check_caps``, ``counter_updates``).

* a ``month`` counter of a monthly subscription is its billing cycle: its key changes exactly at
  the cycle's bounds and at no calendar month start inside a cycle;
* inside a yearly subscription, ``month`` counters are months anchored at the subscription's
  anchor (each year cycle is a whole number of them) and ``year`` is the billing cycle;
* a trial is a period of its own; outside [since, until) the calendar applies again;
* a cap of N per period admits exactly N per subscription period, and the first tier again
  after a renewal.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.catalog import Cap
from tollkeep.kit.clock import (
    SubscriptionPeriods,
    add_months,
    iso,
    month_bounds,
    period_bounds,
    usage_period,
)
from tollkeep.kit.errors import CapExceeded
from tollkeep.ledger.rules import check_caps, counter_updates
from tollkeep.subscriptions.domain import add_periods, cycle_bounds

US = timedelta(microseconds=1)

# anchors biased to the month ends that clamp (29th-31st, Feb 29 of leap years)
_days = st.one_of(st.integers(1, 31), st.integers(28, 31))


@st.composite
def anchors(draw: st.DrawFn) -> datetime:
    year = draw(st.sampled_from([2024, 2025, 2027, 2028, 2100, 2400]))  # leap, not, 2100 not, 2400 leap
    month = draw(st.integers(1, 12))
    day = draw(_days)
    day = min(day, calendar.monthrange(year, month)[1])
    t = draw(st.integers(0, 86_400 * 1_000_000 - 1))
    return datetime(year, month, day, tzinfo=UTC) + timedelta(microseconds=t)


@st.composite
def subscriptions(draw: st.DrawFn) -> tuple[datetime, datetime, str]:
    """(started_at, anchor, billing period): with a trial of 0 to 45 days."""
    started = draw(anchors())
    trial = draw(st.sampled_from([0, 0, 7, 14, 30, 45]))
    return started, started + timedelta(days=trial), draw(st.sampled_from(["month", "year"]))


def sub_of(
    started: datetime, anchor: datetime, cycles: int, period: str, grace_days: int = 0
) -> SubscriptionPeriods:
    _, end = cycle_bounds(started, anchor, period, cycles)
    return SubscriptionPeriods(anchor, started, end + timedelta(days=grace_days))


def test_add_months_is_the_billing_rule() -> None:
    for a in (datetime(2028, 1, 31, 9, tzinfo=UTC), datetime(2027, 2, 28, tzinfo=UTC)):
        for n in range(-30, 40):
            assert add_months(a, n) == add_periods(a, "month", n)
            if n % 12 == 0:
                assert add_months(a, n) == add_periods(a, "year", n // 12)
    assert add_months(datetime(2028, 1, 31, tzinfo=UTC), 1) == datetime(2028, 2, 29, tzinfo=UTC)
    assert add_months(datetime(2027, 1, 31, tzinfo=UTC), 1) == datetime(2027, 2, 28, tzinfo=UTC)
    assert add_months(datetime(2027, 3, 31, tzinfo=UTC), -1) == datetime(2027, 2, 28, tzinfo=UTC)


@settings(max_examples=300, deadline=None)
@given(subscriptions(), st.integers(1, 30), st.integers(0, 10**6))
def test_periods_are_the_billing_cycles(sub: tuple[datetime, datetime, str], cycles: int, pick: int) -> None:
    started, anchor, period = sub
    sp = sub_of(started, anchor, cycles, period)
    for n in range(1, cycles + 1):
        c_start, c_end = cycle_bounds(started, anchor, period, n)
        # the billing cycle is exactly one counter period of its own length...
        first = usage_period(period, c_start, sp)
        assert first[:2] == (c_start, c_end)
        assert usage_period(period, c_end - US, sp)[2] == first[2]
        # ... and a month counter never spans a renewal: a cycle starts a month counter
        m_start, m_end, _ = usage_period("month", c_start, sp)
        assert m_start == c_start and m_end <= c_end
        if n < cycles:
            assert usage_period(period, c_end, sp)[2] != first[2]  # the key changes exactly there
    # a random instant: inside its period, the period of the cycle holding it
    now = started + US * (((sp.until - started - US) // US) * pick // 10**6)
    m_start, m_end, key = usage_period("month", now, sp)
    assert m_start <= now < m_end and key.startswith("sm:")
    n = next(
        i
        for i in range(1, cycles + 1)
        if cycle_bounds(started, anchor, period, i)[0] <= now
        and now < cycle_bounds(started, anchor, period, i)[1]
    )
    c_start, c_end = cycle_bounds(started, anchor, period, n)
    assert c_start <= m_start and m_end <= c_end
    if period == "month":
        assert (m_start, m_end) == (c_start, c_end)
    else:
        # monthly sub-periods of a yearly plan: anchored at the anchor (the trial is one period)
        assert m_start in {started} | {add_months(anchor, k) for k in range(0, 12 * cycles + 1)}


@settings(max_examples=300, deadline=None)
@given(subscriptions(), st.integers(1, 24))
def test_no_reset_at_calendar_month_starts(sub: tuple[datetime, datetime, str], cycles: int) -> None:
    """Inside a subscription's periods a counter resets at its own boundaries and at no calendar
    month start (unless one falls exactly on a boundary)."""
    started, anchor, period = sub
    sp = sub_of(started, anchor, cycles, period)
    boundaries = {add_months(anchor, k) for k in range(0, 12 * cycles + 1)}
    c = month_bounds(started)[1]
    while c < sp.until:
        same = usage_period("month", c - US, sp)[2] == usage_period("month", c, sp)[2]
        assert same == (c not in boundaries), c
        c = month_bounds(c)[1]


@settings(max_examples=200, deadline=None)
@given(subscriptions(), st.integers(1, 12), st.integers(0, 40))
def test_outside_the_periods_the_calendar(
    sub: tuple[datetime, datetime, str], cycles: int, days: int
) -> None:
    """Before ``since`` and from ``until`` on (a lapsed or stale subscription): calendar months,
    so a stale period never freezes a counter; ``day`` and ``lifetime`` are never the
    subscription's."""
    started, anchor, period = sub
    sp = sub_of(started, anchor, cycles, period, grace_days=3)
    for now in (sp.until, sp.until + timedelta(days=days), started - US - timedelta(days=days)):
        for p in ("day", "month", "lifetime"):
            assert usage_period(p, now, sp) == period_bounds(p, now)
    inside = sp.until - US
    assert usage_period("day", inside, sp) == period_bounds("day", inside)
    assert usage_period("lifetime", inside, sp) == period_bounds("lifetime", inside)
    assert usage_period("month", inside, None) == period_bounds("month", inside)


def test_past_due_counts_the_next_cycle() -> None:
    """Past the paid cycle's end, within the grace, the counter is the next cycle's: a renewal
    paid late counts what was used meanwhile in the cycle it pays for."""
    start = datetime(2028, 1, 31, 17, tzinfo=UTC)
    sp = sub_of(start, start, 1, "month", grace_days=3)
    s, e, key = usage_period("month", datetime(2028, 3, 1, tzinfo=UTC), sp)
    assert (
        (s, e)
        == cycle_bounds(start, start, "month", 2)
        == (
            datetime(2028, 2, 29, 17, tzinfo=UTC),
            datetime(2028, 3, 31, 17, tzinfo=UTC),
        )
    )
    assert key == "sm:2028-02-29T17:00:00.000000Z"
    assert usage_period("month", datetime(2028, 3, 3, 17, tzinfo=UTC), sp)[2] == "m:2028-03"  # lapsed


def test_trial_is_a_period_of_its_own() -> None:
    started = datetime(2027, 3, 20, 8, tzinfo=UTC)
    anchor = started + timedelta(days=14)
    sp = sub_of(started, anchor, 2, "year")
    assert usage_period("month", started, sp)[:2] == (started, anchor)
    assert usage_period("month", anchor, sp)[:2] == (anchor, add_months(anchor, 1))
    assert usage_period("year", started + timedelta(days=3), sp)[:2] == (started, anchor)


# ---- the cap and counter rules the ledger applies, over the subscription's periods ---------
def _charge_all(sp: SubscriptionPeriods | None, times: list[datetime], limit: int) -> list[bool]:
    """Feed events to ``check_caps`` / ``counter_updates`` as the ledger does (the counters of
    the periods holding each event); True: admitted."""
    cap = Cap(meter="m", limit=Decimal(limit), period="month", mode="hard")
    counters: dict[str, tuple[Decimal, Decimal]] = {}
    out = []
    for now in times:
        key = usage_period("month", now, sp)[2]
        try:
            check_caps([cap], counters, now, meter="m", plan="p", is_max=False, step=Decimal(1), sub=sp)
        except CapExceeded as exc:
            assert exc.details["resets_at"] == iso(usage_period("month", now, sp)[1])
            out.append(False)
            continue
        for p, v, au, _ in counter_updates(
            counters, [key], is_max=False, quantity=Decimal(1), step=Decimal(1), used_allowance=False
        ):
            counters[p] = (v, au)
        out.append(True)
    return out


@settings(max_examples=150, deadline=None)
@given(anchors(), st.integers(1, 5), st.lists(st.integers(0, 10**6 - 1), min_size=1, max_size=40))
def test_a_cap_of_n_admits_n_per_subscription_period(anchor: datetime, limit: int, picks: list[int]) -> None:
    sp = sub_of(anchor, anchor, 6, "month")
    times = sorted(anchor + US * (((sp.until - anchor - US) // US) * p // 10**6) for p in picks)
    admitted = _charge_all(sp, times, limit)
    per_cycle: dict[int, list[bool]] = {}
    for now, ok in zip(times, admitted, strict=True):
        n = next(i for i in range(1, 7) if now < cycle_bounds(anchor, anchor, "month", i)[1])
        per_cycle.setdefault(n, []).append(ok)
    for oks in per_cycle.values():
        # the first N of each cycle pass, every later one is refused: reset at renewal only
        assert oks == [True] * min(limit, len(oks)) + [False] * max(0, len(oks) - limit)


@pytest.mark.parametrize("anchor_day", [29, 30, 31])
def test_calendar_keying_would_fail(anchor_day: int) -> None:
    """The property above on the calendar rule (what usage.py did before issue #10): a customer
    who hit the cap on the 31st of January would be admitted again on February 1st."""
    anchor = datetime(2028, 1, anchor_day, 12, tzinfo=UTC)
    sp = sub_of(anchor, anchor, 2, "month")
    times = [anchor, anchor + timedelta(hours=1), datetime(2028, 2, 1, 12, tzinfo=UTC)]
    assert _charge_all(sp, times, 2) == [True, True, False]
    assert _charge_all(None, times, 2) == [True, True, True]
