"""Many periods on the test clock, paid on time, late inside the grace, or after the lapse, in a
random order: the invoices, the allowance grants and the balance match an independent count,
to the unit."""

from __future__ import annotations

import itertools
import random
from datetime import datetime

import pytest
from sqlalchemy import select

from tollkeep.ledger.models import Grant
from tollkeep.runtime import Tollkeep


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.mark.parametrize("seed", range(3))
def test_random_payment_behaviour_over_twelve_periods(stk: Tollkeep, seed: int) -> None:
    rnd = random.Random(seed)
    svc = stk.subscriptions
    cid = str(stk.customers.create("many")["id"])
    sub = svc.create(cid, "pro")
    sid = sub["id"]
    expected_cycles = [1]
    for cycle in range(2, 14):
        view = svc.get(sid)
        secs = int((at(view["current_period_end"]) - stk.clock.now()).total_seconds()) + 1
        stk.advance_test_clock(secs)
        view = svc.get(sid)
        assert view["status"] == "past_due" and view["cycle"] == cycle - 1
        assert int(stk.balance(cid)["balance"]) == 10  # the cycle ended: its allowance with it
        inv = view["open_invoice"]
        assert inv is not None and inv["cycle"] == cycle
        how = rnd.choice(["on_time", "in_grace", "after_lapse"])
        if how == "on_time":
            stk.advance_test_clock(rnd.randint(0, 3600))
        elif how == "in_grace":
            stk.advance_test_clock(rnd.randint(86400, 3 * 86400 - 60))
            assert svc.get(sid)["status"] == "past_due"
        else:
            stk.advance_test_clock(3 * 86400)
            assert svc.get(sid)["status"] == "lapsed"
            assert stk.customers.get(cid)["plan"] == "free"
            assert int(stk.balance(cid)["balance"]) == 10
            stk.advance_test_clock(rnd.randint(0, 86400))
        out = svc.settle_invoice(inv["id"], f"pay-{cycle}")
        assert out["changed"] is True
        if rnd.random() < 0.3:  # a webhook delivered twice
            assert svc.settle_invoice(inv["id"], f"pay-{cycle}")["changed"] is False
        expected_cycles.append(cycle)
        view = svc.get(sid)
        assert (view["status"], view["cycle"]) == ("active", cycle)
        assert stk.customers.get(cid)["plan"] == "pro"
        assert int(stk.balance(cid)["balance"]) == 10 + 1000
    invoices = svc.invoices(sid)
    assert [(i["cycle"], i["status"], i["amount"]) for i in invoices] == [
        (c, "paid", 2900) for c in range(2, 14)
    ]
    # consecutive cycles, no gap, no overlap
    assert all(a["period_end"] == b["period_start"] for a, b in itertools.pairwise(invoices))
    G = Grant.__table__
    with stk.db.scope(write=False) as s:
        notes = [r.note for r in s.execute(select(G.c.note).where(G.c.source == "plan_allowance")).all()]
    assert sorted(n for n in notes if n.startswith("plan pro")) == sorted(
        f"plan pro allowance {sid}:{c}" for c in expected_cycles
    )
    assert stk.verify().ok
