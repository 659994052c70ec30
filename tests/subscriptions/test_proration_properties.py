"""Proration, pure (hypothesis): consecutive upgrades in one period add up to the time-weighted
price of the plans held (within one rounding per change), in any currency; discounts stay in
[0, price]; a cheaper plan is never charged now."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from tollkeep.subscriptions.domain import (
    ChangeKind,
    Discount,
    add_periods,
    change_kind,
    convert,
    discounted,
    prorate,
    remaining_fraction,
)

START = datetime(2024, 1, 31, 10, 0, tzinfo=UTC)
END = add_periods(START, "month", 1)  # Feb 29 (a leap year): 29 days
PERIOD_US = (END - START) // timedelta(microseconds=1)


def paid_in_period(
    base: int, upgrades: list[tuple[int, int]], rate: Decimal = Decimal(1)
) -> tuple[int, Decimal]:
    """What the service charges for ``base`` then each (microsecond offset, new price) upgrade:
    the full period of ``base``, then one rounded prorated invoice per change whose credit is
    what was paid for the plan held (its period price). Returns (paid, the exact time-weighted
    price), both in the invoice currency's minor units."""
    paid = convert(base, "USD", rate, "USD") if rate == 1 else convert(base, "USD", rate, "EUR")
    target = "USD" if rate == 1 else "EUR"
    held, since = base, 0
    exact = Decimal(0)
    for offset, price in upgrades:
        at = START + timedelta(microseconds=offset)
        owed = prorate(held, price, START, END, at)
        paid += convert(owed, "USD", rate, target) if owed > 0 else 0
        exact += Decimal(held) * Decimal(offset - since) / Decimal(PERIOD_US)
        held, since = price, offset
    exact += Decimal(held) * Decimal(PERIOD_US - since) / Decimal(PERIOD_US)
    return paid, exact * rate


upgrade_seqs = st.integers(min_value=1, max_value=10**7).flatmap(
    lambda base: st.tuples(
        st.just(base),
        st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=PERIOD_US), st.integers(min_value=1, max_value=10**7)
            ),
            max_size=8,
        ),
    )
)


def as_upgrades(base: int, raw: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted times, strictly rising prices (each change an upgrade)."""
    times = sorted(t for t, _ in raw)
    price, out = base, []
    for t, (_, step) in zip(times, raw, strict=True):
        price += step
        out.append((t, price))
    return out


@settings(max_examples=500, deadline=None)
@given(upgrade_seqs)
def test_consecutive_upgrades_pay_the_time_weighted_price(seq: tuple[int, list[tuple[int, int]]]) -> None:
    base, raw = seq
    ups = as_upgrades(base, raw)
    paid, exact = paid_in_period(base, ups)
    # one rounding (half up, at most 1/2 minor unit) per change, none on the base period
    assert abs(Decimal(paid) - exact) <= Decimal(len(ups)) / 2


@settings(max_examples=300, deadline=None)
@given(upgrade_seqs, st.decimals(min_value=Decimal("0.01"), max_value=Decimal(50), places=6))
def test_converted_upgrades_round_once_each(seq: tuple[int, list[tuple[int, int]]], rate: Decimal) -> None:
    base, raw = seq
    ups = as_upgrades(base, raw)
    paid, exact = paid_in_period(base, ups, rate)
    # the base period is a renewal invoice (rounded once too)
    assert abs(Decimal(paid) - exact) <= Decimal(len(ups) + 1) / 2


def test_the_second_upgrade_credits_what_was_paid_for_the_plan_held() -> None:
    """Pro 29.00 → Team 99.00 at half the period → Enterprise 299.00 at three quarters: the
    second credit is Team's for the last quarter (24.75), not Pro's (7.25)."""
    half = START + (END - START) / 2
    three_q = START + (END - START) * 3 / 4
    first = prorate(2900, 9900, START, END, half)
    second = prorate(9900, 29900, START, END, three_q)
    assert (first, second) == (Decimal(3500), Decimal(5000))
    # Pro half the period, Team a quarter, Enterprise a quarter: 1450 + 2475 + 7475
    assert 2900 + first + second == Decimal(2900) / 2 + Decimal(9900) / 4 + Decimal(29900) / 4 == 11400


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=PERIOD_US * 2), st.integers(-PERIOD_US, 0))
def test_the_fraction_left_is_within_0_and_1(after: int, before: int) -> None:
    for off in (after, before):
        f = remaining_fraction(START, END, START + timedelta(microseconds=off))
        assert Decimal(0) <= f <= Decimal(1)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=1, max_value=100),
    st.integers(min_value=1, max_value=10**9),
)
def test_discounts_stay_within_the_price(price: int, percent: int, off: int) -> None:
    for d in (Discount(percent=percent), Discount(amount=off, currency="USD"), None):
        assert 0 <= discounted(price, "USD", d) <= price
    assert discounted(price, "USD", Discount(amount=off, currency="EUR")) == price  # not its currency
    assert discounted(price, "USD", Discount(percent=100)) == 0


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=10**9),
    st.integers(min_value=0, max_value=10**9),
    st.integers(0, 10**9),
)
def test_a_cheaper_plan_is_never_charged_now(owed: int, paid: int, new: int) -> None:
    kind = change_kind(owed, paid, new)
    if new < paid:
        assert kind is ChangeKind.DOWNGRADE
    elif owed > 0:
        assert kind is ChangeKind.UPGRADE
    else:
        assert kind is ChangeKind.ZERO
