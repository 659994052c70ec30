"""Regression tests for the discrepancies an independent oracle found (issue #5, items 1-5 and
16): each reproduction is the one reported, and failed before its fix. The ``tk`` fixture runs
``ledger verify`` after each test, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import count
from typing import Any

import pytest

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import CapExceeded, InsufficientCredits, InvalidInput
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

_n = count()

CATALOG = """
[meters.api_call]
[meters.api_call.price]
model = "flat"
amount = 1
[meters.peak]
aggregation = "max"
[meters.peak.price]
model = "per_unit"
unit_price = 1
[meters.llm_tokens]
aggregation = "sum"
[meters.llm_tokens.price]
model = "tokens"
per = 1000
[meters.llm_tokens.price.models."m"]
input = 1
output = 2
[plans.starter]
name = "Starter"
[plans.starter.allowance]
amount = 20
period = "month"
[plans.other]
name = "Other"
[plans.tokencap]
name = "Token cap"
[[plans.tokencap.caps]]
meter = "llm_tokens"
limit = 3000
period = "day"
mode = "hard"
[plans.peakcap]
name = "Peak cap"
[[plans.peakcap.caps]]
meter = "peak"
limit = 10
period = "month"
mode = "hard"
[plans.peakallow]
name = "Peak allowance"
[plans.peakallow.allowance]
amount = 100
period = "month"
[[plans.peakallow.caps]]
meter = "peak"
limit = 10
period = "month"
mode = "allowance"
"""


@pytest.fixture
def cat(tk: Tollkeep) -> Tollkeep:
    tk.catalogs.set(parse_catalog(CATALOG))
    return tk


def customer(tk: Tollkeep, plan: str | None = None) -> str:
    return str(tk.customers.create(f"or-{next(_n)}", plan=plan)["id"])


def usage(tk: Tollkeep, cid: str, meter: str = "api_call", qty: Any = None, **props: Any) -> dict[str, Any]:
    q = None if qty is None else Decimal(str(qty))
    return tk.ledger.record_usage(UsageRequest(cid, meter, q, f"u{next(_n)}", props or None))


def balance(tk: Tollkeep, cid: str) -> int:
    return int(tk.balance(cid)["balance"])


# 1 ------------------------------------------------------------------------------------------------
def test_refund_of_settled_hold_goes_back_to_the_live_promo(cat: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(cat)
    cat.ledger.set_overdraft(cid, 10)
    promo = cat.ledger.grant(cid, 6, source="promo", expires_at=clock.now() + timedelta(seconds=4))["id"]
    hold = cat.ledger.create_hold(cid, idempotency_key="h", amount=8)  # promo 6 + overdraft 2
    assert balance(cat, cid) == -2
    cat.ledger.grant(cid, 5, source="purchase", idempotency_key="p")  # repays the overdraft
    settled = cat.ledger.resolve_hold(cid, hold["id"], action="settle", amount=4)
    assert settled["charged"] == 4
    charges = [e for e in cat.usage(cid)["data"] if e["charged"]]
    refund = cat.ledger.refund(charges[0]["event_id"], idempotency_key="r", amount=3)
    assert refund["to_original_grants"] == 3 and refund["new_grant_id"] is None
    grants = {g["id"]: g["remaining"] for g in cat.balance(cid)["grants"]}
    assert grants[promo] == 2 + 3
    clock.advance(timedelta(seconds=5))
    assert balance(cat, cid) == 5  # 6 + 5 granted, 4 charged, 3 refunded, 5 of promo expired
    cat.ledger.sweep()
    assert balance(cat, cid) == 5


def test_refund_of_settled_hold_never_exceeds_what_the_charge_took(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.set_overdraft(cid, 10)
    hold = cat.ledger.create_hold(cid, idempotency_key="h", amount=8)  # all on the overdraft
    cat.ledger.grant(cid, 20, source="purchase", idempotency_key="p")  # repays 8
    cat.ledger.resolve_hold(cid, hold["id"], action="settle", amount=3)
    assert balance(cat, cid) == 20 - 3
    charge = next(e for e in cat.usage(cid)["data"] if e["charged"])
    cat.ledger.refund(charge["event_id"], idempotency_key="r")
    assert balance(cat, cid) == 20


# 2 ------------------------------------------------------------------------------------------------
def test_plan_change_with_open_hold_does_not_revive_old_allowance(cat: Tollkeep) -> None:
    cid = customer(cat, plan="starter")
    hold = cat.ledger.create_hold(cid, idempotency_key="h", amount=18)
    assert balance(cat, cid) == 2
    cat.plans.change_plan(cid, "other")
    assert balance(cat, cid) == 0
    cat.ledger.resolve_hold(cid, hold["id"], action="release")
    assert balance(cat, cid) == 0
    assert all(g["remaining"] == 0 or not g["live"] for g in cat.balance(cid)["grants"])
    cat.ledger.sweep()
    assert balance(cat, cid) == 0


def test_plan_change_with_wholly_held_allowance(cat: Tollkeep) -> None:
    cid = customer(cat, plan="starter")
    hold = cat.ledger.create_hold(cid, idempotency_key="h", amount=20)  # allowance at 0
    cat.plans.change_plan(cid, None)
    cat.ledger.resolve_hold(cid, hold["id"], action="settle", amount=5)
    assert balance(cat, cid) == 0
    with pytest.raises(InsufficientCredits):
        usage(cat, cid)


def test_expired_hold_of_a_closed_allowance_returns_nothing(cat: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(cat, plan="starter")
    cat.ledger.create_hold(cid, idempotency_key="h", amount=15, ttl_seconds=10)
    cat.plans.change_plan(cid, "other")
    clock.advance(timedelta(seconds=11))
    assert cat.ledger.sweep()["holds_released"] == 1
    assert balance(cat, cid) == 0


# 3 ------------------------------------------------------------------------------------------------
def test_token_usage_records_input_plus_output(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.grant(cid, 10_000, idempotency_key="g")
    out = usage(cat, cid, "llm_tokens", model="m", input_tokens=2719, output_tokens=1136)
    assert out["quantity"] == str(2719 + 1136)
    assert out["charged"] == 5  # 2.719 + 2.272 = 4.991, rounded once, up
    listed = cat.usage(cid)["data"][0]
    assert listed["quantity"] == "3855"


def test_token_hard_cap_counts_tokens_not_calls(cat: Tollkeep) -> None:
    cid = customer(cat, plan="tokencap")
    cat.ledger.grant(cid, 10_000, idempotency_key="g")
    usage(cat, cid, "llm_tokens", model="m", input_tokens=1000, output_tokens=1000)
    with pytest.raises(CapExceeded) as exc:
        usage(cat, cid, "llm_tokens", model="m", input_tokens=1000, output_tokens=1000)
    assert exc.value.details["used"] == "2000"
    usage(cat, cid, "llm_tokens", model="m", input_tokens=600, output_tokens=400)  # exactly 3000


def test_token_quantity_that_contradicts_counts_is_refused(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.grant(cid, 10_000, idempotency_key="g")
    with pytest.raises(InvalidInput) as exc:
        usage(cat, cid, "llm_tokens", 1, model="m", input_tokens=10, output_tokens=5)
    assert exc.value.code == "quantity_mismatch"
    assert usage(cat, cid, "llm_tokens", 15, model="m", input_tokens=10, output_tokens=5)["quantity"] == "15"


def test_token_hold_settle_rule(cat: Tollkeep) -> None:
    """A tokens hold records the estimate's token total; a settle with token counts and no quantity
    counts those tokens; a settle whose quantity contradicts the (merged) token counts is refused."""
    cid = customer(cat, plan="tokencap")
    cat.ledger.grant(cid, 10_000, idempotency_key="g")
    est = {"model": "m", "input_tokens": 500, "output_tokens": 500}
    hold = cat.ledger.create_hold(cid, idempotency_key="h", meter="llm_tokens", properties=est)
    assert hold["quantity"] == "1000"
    with pytest.raises(InvalidInput) as exc:
        cat.ledger.resolve_hold(cid, hold["id"], action="settle", quantity=5)
    assert exc.value.code == "quantity_mismatch"
    done = cat.ledger.resolve_hold(
        cid, hold["id"], action="settle", properties={"input_tokens": 1200, "output_tokens": 800}
    )
    assert done["charged"] == 1 + 2  # 1.2 + 1.6 = 2.8, rounded up
    with pytest.raises(CapExceeded):  # 2000 counted; 1001 more would pass the 3000 cap
        usage(cat, cid, "llm_tokens", model="m", input_tokens=1001, output_tokens=0)


# 4 ------------------------------------------------------------------------------------------------
def test_hard_cap_on_max_meter_compares_the_period_max(cat: Tollkeep) -> None:
    cid = customer(cat, plan="peakcap")
    cat.ledger.grant(cid, 100, idempotency_key="g")
    for reading in (5, 5, 10, 6, 6, 10):
        usage(cat, cid, "peak", reading)
    with pytest.raises(CapExceeded) as exc:
        usage(cat, cid, "peak", 11)
    assert exc.value.details["used"] == "10"


def test_max_meter_hold_reserves_its_reading_not_a_sum(cat: Tollkeep) -> None:
    cid = customer(cat, plan="peakcap")
    cat.ledger.create_hold(cid, idempotency_key="a", meter="peak", quantity=8, amount=0)
    cat.ledger.create_hold(cid, idempotency_key="b", meter="peak", quantity=9, amount=0)
    with pytest.raises(CapExceeded):
        cat.ledger.create_hold(cid, idempotency_key="c", meter="peak", quantity=11, amount=0)


def test_allowance_cap_on_max_meter(cat: Tollkeep) -> None:
    cid = customer(cat, plan="peakallow")
    for reading in (5, 5, 10):  # within the cap: the allowance pays for the rises of the max
        usage(cat, cid, "peak", reading)
    rows = cat.ledger.executor.call(
        lambda s: s.execute(
            __import__("sqlalchemy").text("select value, allowance_used from usage_counters")
        ).all()
    )
    assert {(Decimal(v), Decimal(a)) for v, a in rows} == {(Decimal(10), Decimal(10))}


# 5 ------------------------------------------------------------------------------------------------
def test_available_means_one_thing_under_overdraft(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.set_overdraft(cid, 10)
    cat.ledger.create_hold(cid, idempotency_key="h1", amount=4)
    view = cat.balance(cid)
    assert view["balance"] == -4 and view["available"] == 6
    with pytest.raises(InsufficientCredits) as exc:
        cat.ledger.create_hold(cid, idempotency_key="h2", amount=7)
    assert exc.value.details["available"] == view["available"]
    cat.ledger.create_hold(cid, idempotency_key="h3", amount=6)
    assert cat.balance(cid)["available"] == 0


def test_available_with_grants_and_overdraft(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.set_overdraft(cid, 5)
    cat.ledger.grant(cid, 3, idempotency_key="g")
    view = cat.balance(cid)
    assert view["available"] == 8
    with pytest.raises(InsufficientCredits) as exc:
        cat.ledger.create_hold(cid, idempotency_key="h", amount=9)
    assert exc.value.details["available"] == 8


# 16 -----------------------------------------------------------------------------------------------
def test_meter_removed_from_catalog_strands_nothing(cat: Tollkeep) -> None:
    cid = customer(cat)
    cat.ledger.grant(cid, 100, idempotency_key="g")
    req = UsageRequest(cid, "llm_tokens", None, "evt-1", {"model": "m", "input_tokens": 1000})
    first = cat.ledger.record_usage(req)
    hold = cat.ledger.create_hold(
        cid, idempotency_key="h", meter="llm_tokens", properties={"model": "m", "input_tokens": 3000}
    )
    hold2 = cat.ledger.create_hold(
        cid, idempotency_key="h2", meter="llm_tokens", properties={"model": "m", "input_tokens": 3000}
    )
    without = CATALOG.replace("[meters.llm_tokens", "[meters.gone_tokens").replace(
        'meter = "llm_tokens"', 'meter = "gone_tokens"'
    )
    cat.catalogs.set(parse_catalog(without))
    again = cat.ledger.record_usage(req)  # a replay: the stored result, not a 422
    assert again["duplicate"] and again["event_id"] == first["event_id"]
    with pytest.raises(InvalidInput) as exc:
        cat.ledger.resolve_hold(cid, hold["id"], action="settle", quantity=10)
    assert exc.value.code == "unknown_meter"
    done = cat.ledger.resolve_hold(cid, hold["id"], action="settle", amount=2)
    assert done["charged"] == 2
    cat.ledger.resolve_hold(cid, hold2["id"], action="release")
    assert balance(cat, cid) == 100 - 1 - 2
    with pytest.raises(InvalidInput):
        usage(cat, cid, "llm_tokens", model="m", input_tokens=1)
