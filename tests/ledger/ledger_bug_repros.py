"""The reproductions of issue 5's ledger discrepancies (bugs 1-6), kept as regression tests.

Each ``repro_bug_N(tk, clock)`` runs the issue's reproduction on a runtime and returns the list
of ways the service disagrees with the documentation (empty when it behaves as documented).
tests/ledger/test_exact_balances_and_bug_repros.py runs them on SQLite and PostgreSQL. They were strict xfails
while the fixes were in progress; the fixes turned them into XPASSes and the markers went.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import CapExceeded, InsufficientCredits
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

CATALOG = """
[meters.api_call]
[meters.api_call.price]
model = "flat"
amount = 1
[meters.gauge]
aggregation = "max"
[meters.llm_tokens]
aggregation = "sum"
[meters.llm_tokens.price]
model = "tokens"
per = 1000
[meters.llm_tokens.price.models."m"]
input = 1
output = 2
[plans.basic]
name = "Basic"
prices = { usd = 900 }
[plans.basic.allowance]
amount = 20
period = "month"
[plans.capped]
name = "Capped"
[[plans.capped.caps]]
meter = "gauge"
limit = 10
period = "month"
mode = "hard"
[[plans.capped.caps]]
meter = "llm_tokens"
limit = 3000
period = "day"
mode = "hard"
"""

Problems = list[str]


def _customer(tk: Tollkeep, name: str, plan: str | None = None) -> str:
    return str(tk.customers.create(name, plan=plan)["id"])


def repro_bug_1(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """A refund of a settled hold goes back to the grants the charge came from (all 3 to the
    live promo), not partly to a new grant; after the promo expires the balance is 5."""
    cid = _customer(tk, "bug1")
    tk.ledger.set_overdraft(cid, 10)
    promo = tk.ledger.grant(
        cid, 6, source="promo", expires_at=clock.now() + timedelta(seconds=4), idempotency_key="p"
    )["id"]
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=8)  # promo 6 + overdraft 2
    tk.ledger.grant(cid, 5, source="purchase", idempotency_key="buy")  # repays the overdraft
    settled = tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=4)
    refund = tk.ledger.refund(settled["operation_id"], idempotency_key="r", amount=3)
    out: Problems = []
    if refund["to_original_grants"] != 3 or refund["new_grant_id"] is not None:
        out.append(f"refund of 3 went {refund['to_original_grants']} to the original grants")
    promo_left = {g["id"]: g["remaining"] for g in tk.balance(cid)["grants"]}.get(promo, 0)
    if promo_left != 5:
        out.append(f"promo has {promo_left}, expected 2 + 3 = 5")
    clock.advance(timedelta(seconds=5))
    tk.ledger.sweep()
    if tk.balance(cid)["balance"] != 5:
        out.append(f"balance after the promo expired is {tk.balance(cid)['balance']}, expected 5")
    return out


def repro_bug_2(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """A plan change ends the old plan's allowance: releasing a hold that drew on it afterwards
    must not make it live again."""
    tk.catalogs.set(parse_catalog(CATALOG))
    cid = _customer(tk, "bug2", plan="basic")
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=18)
    tk.plans.change_plan(cid, None)
    clock.advance(timedelta(seconds=1))
    tk.ledger.resolve_hold(cid, hold["id"], action="release")
    out: Problems = []
    b = tk.balance(cid)
    live_allowance = sum(g["remaining"] for g in b["grants"] if g["source"] == "plan_allowance" and g["live"])
    if live_allowance:
        out.append(f"the ended allowance is live again with {live_allowance} credits")
    if b["balance"] != 0:
        out.append(f"balance {b['balance']} after leaving the plan, expected 0")
    return out


def repro_bug_3(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """A tokens meter records input + output tokens as the event's quantity."""
    tk.catalogs.set(parse_catalog(CATALOG))
    cid = _customer(tk, "bug3")
    tk.ledger.grant(cid, 1000, idempotency_key="g")
    props = {"model": "m", "input_tokens": 2719, "output_tokens": 1136}
    res = tk.ledger.record_usage(UsageRequest(cid, "llm_tokens", None, "t1", props))
    listed = tk.usage(cid)["data"][0]["quantity"]
    out: Problems = []
    if res["quantity"] != "3855" or listed != "3855":
        out.append(f"recorded quantity {res['quantity']!r} (listed {listed!r}), expected '3855'")
    return out


def repro_bug_4(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """A hard cap on a ``max`` meter compares the period's max, not the sum of readings."""
    tk.catalogs.set(parse_catalog(CATALOG))
    cid = _customer(tk, "bug4", plan="capped")
    out: Problems = []
    for i, reading in enumerate((5, 5, 10)):
        try:
            tk.ledger.record_usage(UsageRequest(cid, "gauge", Decimal(reading), f"g{i}"))
        except CapExceeded as exc:
            out.append(f"reading {reading} refused with used={exc.details.get('used')}")
    return out


def repro_bug_5(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """``available`` has one meaning: what GET balance says can be held, and the 402 agrees."""
    cid = _customer(tk, "bug5")
    tk.ledger.set_overdraft(cid, 10)
    tk.ledger.create_hold(cid, idempotency_key="h0", amount=4)
    available = int(tk.balance(cid)["available"])
    out: Problems = []
    try:
        tk.ledger.create_hold(cid, idempotency_key="h1", amount=available + 1)
        out.append(f"a hold of available + 1 = {available + 1} succeeded")
    except InsufficientCredits as exc:
        if exc.details["available"] != available:
            out.append(f"balance says available {available}, the 402 says {exc.details['available']}")
    return out


def repro_bug_6(tk: Tollkeep, clock: FrozenClock) -> Problems:
    """GET /v1/usage lists newest first: a usage event after a settled hold lists before it."""
    cid = _customer(tk, "bug6")
    tk.ledger.grant(cid, 100, idempotency_key="g")
    hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=5)
    settled = tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=5)
    clock.advance(timedelta(seconds=1))
    later = tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "u"))
    listed = [e["event_id"] for e in tk.usage(cid)["data"]]
    if listed != [later["event_id"], settled["operation_id"]]:
        return [f"listing {listed} is not newest first"]
    return []


REPROS: dict[int, Callable[[Tollkeep, FrozenClock], Problems]] = {
    1: repro_bug_1,
    2: repro_bug_2,
    3: repro_bug_3,
    4: repro_bug_4,
    5: repro_bug_5,
    6: repro_bug_6,
}
