"""The subscriptions state machine and billing cycles, pure (hypothesis): no transition outside
the table, no cycle counted twice or skipped, cycles that tile time (month ends, leap years)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.subscriptions.domain import (
    BACKOFF_SECONDS,
    TRANSITIONS,
    Event,
    IllegalTransition,
    Status,
    SubState,
    add_periods,
    apply,
    convert,
    cycle_bounds,
    next_attempt,
)

events = st.tuples(st.sampled_from(list(Event)), st.integers(min_value=0, max_value=6))
start_status = st.sampled_from([Status.TRIALING, Status.ACTIVE])


@settings(max_examples=400, deadline=None)
@given(start_status, st.lists(events, max_size=60))
def test_random_events_never_leave_the_table_nor_count_a_cycle_twice(first: Status, seq: list) -> None:
    state = SubState(first)
    granted = [1]  # cycle 1 starts with the subscription
    settled_invoices: set[int] = set()
    for event, n in seq:
        # an invoice cycle near the right one: the right one, or a stale / future one
        cycle = state.cycle + n - 2 if event in (Event.SETTLED, Event.INVOICE_OPENED) else None
        try:
            move = apply(state, event, cycle=cycle)
        except IllegalTransition:
            assert (state.status, event) not in TRANSITIONS or event in (
                Event.SETTLED,
                Event.INVOICE_OPENED,
                Event.INVOICE_FAILED,
                Event.RETRY,
            )
            continue
        assert (state.status, event) in TRANSITIONS
        assert move.state.status in TRANSITIONS[(state.status, event)]
        if move.grant_cycle is not None:
            # a grant only with a settle of the open invoice of exactly the next cycle
            assert event is Event.SETTLED and move.grant_cycle == state.cycle + 1 == cycle
            assert state.invoice_cycle == cycle and cycle not in settled_invoices
            settled_invoices.add(cycle)
            granted.append(move.grant_cycle)
        # the cycle only moves with a settle, and by one
        assert move.state.cycle == state.cycle + (1 if move.grant_cycle is not None else 0)
        if state.status is Status.CANCELED:
            pytest.fail("canceled is final")
        state = move.state
    assert granted == list(range(1, len(granted) + 1))  # each cycle once, none skipped


def test_the_table_is_what_the_docs_say() -> None:
    assert TRANSITIONS[(Status.ACTIVE, Event.PERIOD_ENDED)] == (Status.PAST_DUE, Status.CANCELED)
    assert TRANSITIONS[(Status.PAST_DUE, Event.GRACE_EXPIRED)] == (Status.LAPSED,)
    assert TRANSITIONS[(Status.LAPSED, Event.SETTLED)] == (Status.ACTIVE,)
    assert not [k for k in TRANSITIONS if k[0] is Status.CANCELED]
    with pytest.raises(IllegalTransition):
        apply(SubState(Status.ACTIVE), Event.SETTLED, cycle=2)  # no open invoice: no renewal


def test_a_settle_renews_once() -> None:
    s = apply(SubState(Status.ACTIVE), Event.PERIOD_ENDED).state
    s = apply(s, Event.INVOICE_OPENED, cycle=2).state
    move = apply(s, Event.SETTLED, cycle=2)
    assert move.state == SubState(Status.ACTIVE, cycle=2) and move.grant_cycle == 2
    with pytest.raises(IllegalTransition):
        apply(move.state, Event.SETTLED, cycle=2)
    with pytest.raises(IllegalTransition):
        apply(s, Event.INVOICE_OPENED, cycle=2)  # one invoice per cycle


def test_failures_stop_at_the_limit() -> None:
    s = apply(SubState(Status.ACTIVE), Event.PERIOD_ENDED).state
    for _ in range(5):
        s = apply(s, Event.INVOICE_FAILED).state
    assert s.failures == 5 and s.renewal_stopped
    with pytest.raises(IllegalTransition):
        apply(s, Event.INVOICE_FAILED)
    assert apply(s, Event.RETRY).state.failures == 0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    waits = [next_attempt(n, now) - now for n in range(1, 6)]
    assert waits == [timedelta(seconds=w) for w in BACKOFF_SECONDS]
    assert [w.total_seconds() for w in waits] == [300, 1800, 7200, 21600, 43200]


aware = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))


@settings(max_examples=300, deadline=None)
@given(aware, st.sampled_from(["month", "year"]), st.integers(min_value=0, max_value=60), st.integers(0, 40))
def test_cycles_tile_time_from_the_anchor(start: datetime, period: str, trial_days: int, n: int) -> None:
    anchor = start + timedelta(days=trial_days)
    prev_end = None
    for cycle in range(1, n + 3):
        a, b = cycle_bounds(start, anchor, period, cycle)
        assert a < b
        if prev_end is not None:
            assert a == prev_end  # no gap, no overlap
        prev_end = b
        if cycle >= 2 or trial_days == 0:
            # the anchor's day of month, clamped to the month's last day (Jan 31 → Feb 28/29)
            assert b.day == min(anchor.day, _days_in_month(b.year, b.month))
            assert (b.hour, b.minute, b.second) == (anchor.hour, anchor.minute, anchor.second)


def _days_in_month(y: int, m: int) -> int:
    return calendar.monthrange(y, m)[1]


def test_month_ends_and_leap_years() -> None:
    jan31 = datetime(2024, 1, 31, 10, tzinfo=UTC)
    assert [add_periods(jan31, "month", k).date().isoformat() for k in range(4)] == [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
    ]
    feb29 = datetime(2024, 2, 29, tzinfo=UTC)
    assert add_periods(feb29, "year", 1).date().isoformat() == "2025-02-28"
    assert add_periods(feb29, "year", 4).date().isoformat() == "2028-02-29"


@given(
    st.integers(min_value=0, max_value=10**12),
    st.decimals(min_value=Decimal("0.00000001"), max_value=Decimal(10**6), places=8),
)
def test_conversion_is_exact_then_rounded_once_half_up(amount: int, rate: Decimal) -> None:
    out = convert(amount, "USD", rate, "BTC")
    exact = Decimal(amount) / 100 * rate * Decimal(10**8)
    assert abs(Decimal(out) - exact) <= Decimal("0.5")
    if exact - int(exact) == Decimal("0.5"):
        assert out == int(exact) + 1


def test_conversion_examples() -> None:
    assert convert(2900, "USD", Decimal("0.0000105"), "BTC") == 30450  # sats
    assert convert(2900, "USD", Decimal("0.00001234567"), "BTC") == 35802  # 35802.443 → 35802
    assert convert(1, "USD", Decimal("0.5"), "EUR") == 1  # 0.5 cent → 1 (half up)
    assert convert(2900, "USD", Decimal("151.25"), "JPY") == 4386  # 4386.25 yen → 4386
    assert convert(2900, "USD", Decimal(1), "USD") == 2900
    with pytest.raises(ValueError):
        convert(2900, "USD", Decimal(0), "EUR")
