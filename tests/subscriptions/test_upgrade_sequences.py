"""Random sequences of upgrades through the real service (SQLite and PostgreSQL, hypothesis): in
one period, what the invoices charge adds up to the time-weighted price of the plans held, within
one rounding (½ minor unit) per change, and each upgrade's allowance difference is granted once.
This is the check that catches the common bug (a second upgrade credited the first plan's price
instead of what was paid for the plan held)."""

from __future__ import annotations

import itertools
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollkeep.runtime import Tollkeep

from .helpers import at

LADDER = [("starter", 900, 300), ("pro", 2900, 1000), ("team", 9900, 5000), ("enterprise", 29900, 20000)]
_n = itertools.count()


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    st.integers(min_value=0, max_value=2),
    st.lists(st.integers(min_value=1, max_value=9 * 86_400), min_size=1, max_size=3),
    st.data(),
)
def test_upgrades_pay_the_time_weighted_price(
    stk: Tollkeep, first: int, waits: list[int], data: st.DataObject
) -> None:
    cid = str(stk.customers.create(f"seq-{next(_n)}")["id"])
    plan, price, _ = LADDER[first]
    sub = stk.subscriptions.create(cid, plan)
    start, end = at(sub["current_period_start"]), at(sub["current_period_end"])
    held, since, level = price, start, first
    weighted = Decimal(0)
    charged = 0
    changes = 0
    for wait in waits:
        if level == len(LADDER) - 1:
            break
        level = data.draw(st.integers(min_value=level + 1, max_value=len(LADDER) - 1))
        stk.clock.advance(timedelta(seconds=wait))
        now = stk.clock.now()
        if now >= end:
            break
        to, to_price, _ = LADDER[level]
        out = stk.subscriptions.changes.upgrade(cid, to)
        if out["invoice"] is not None:
            charged += out["invoice"]["amount"]
            stk.subscriptions.settle_invoice(out["invoice"]["id"])
        assert stk.subscriptions.get(sub["id"])["plan"] == to
        weighted += Decimal(held) * Decimal((now - since) // timedelta(microseconds=1))
        held, since = to_price, now
        changes += 1
    weighted += Decimal(held) * Decimal((end - since) // timedelta(microseconds=1))
    weighted /= Decimal((end - start) // timedelta(microseconds=1))
    assert abs(Decimal(price + charged) - weighted) <= Decimal(changes) / 2
    # the allowance: the free plan carried over (10), the first plan's, each difference once
    granted = 10 + LADDER[first][2] + (LADDER[level][2] - LADDER[first][2] if changes else 0)
    assert int(stk.balance(cid)["balance"]) == granted
