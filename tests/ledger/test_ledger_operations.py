"""LedgerService through a real runtime, on SQLite and PostgreSQL (the ``tk`` fixture verifies the
ledger from its journal after every test)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from itertools import count
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock, month_bounds
from tollkeep.kit.errors import CapExceeded, Conflict, IdempotencyConflict, InsufficientCredits
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

_keys = count()


def new_customer(tk: Tollkeep, plan: str | None = None) -> str:
    return str(tk.customers.create(f"ext-{next(_keys)}", plan=plan)["id"])


def use(
    tk: Tollkeep,
    cid: str,
    meter: str = "api_call",
    quantity: Any = None,
    key: str | None = None,
    **props: Any,
) -> dict[str, Any]:
    return tk.ledger.record_usage(
        UsageRequest(
            cid,
            meter,
            None if quantity is None else Decimal(str(quantity)),
            key or f"k-{next(_keys)}",
            properties=props or None,
        )
    )


def remaining(tk: Tollkeep, cid: str) -> dict[str, int]:
    """Remaining credits per grant id (grants with credits left)."""
    return {g["id"]: g["remaining"] for g in tk.balance(cid)["grants"]}


def bal(tk: Tollkeep, cid: str) -> int:
    return int(tk.balance(cid)["balance"])


def step(clock: FrozenClock) -> None:
    clock.advance(timedelta(seconds=1))


# ------------------------------------------------------------------------------------------ spend order
def test_spend_order_across_grants(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    purchase = tk.ledger.grant(cid, 10, source="purchase")["id"]
    step(clock)
    promo_late = tk.ledger.grant(cid, 5, source="promo", expires_at=clock.now() + timedelta(days=10))["id"]
    step(clock)
    promo_soon = tk.ledger.grant(cid, 5, source="promo", expires_at=clock.now() + timedelta(days=2))["id"]
    step(clock)
    promo_forever = tk.ledger.grant(cid, 5, source="promo")["id"]
    step(clock)
    first = tk.ledger.grant(cid, 3, source="purchase", priority=1)["id"]
    step(clock)
    older_adj = tk.ledger.grant(cid, 2, source="adjustment")["id"]
    step(clock)
    newer_adj = tk.ledger.grant(cid, 2, source="adjustment")["id"]

    # priority 1 first, then promos (20) soonest expiry first, never-expiring last
    use(tk, cid, quantity=None)  # 1 credit
    assert remaining(tk, cid)[first] == 2
    tk.ledger.record_usage(UsageRequest(cid, "search", Decimal(14), "s1"))  # 7 credits
    left = remaining(tk, cid)
    assert first not in left and promo_soon not in left
    assert left[promo_late] == 5 - (7 - 2 - 5) and left[promo_forever] == 5
    tk.ledger.record_usage(UsageRequest(cid, "search", Decimal(22), "s2"))  # 11: promos, then adjustments
    left = remaining(tk, cid)
    assert promo_late not in left and promo_forever not in left
    assert left[older_adj] == 1 and left[newer_adj] == 2 and left[purchase] == 10
    use(tk, cid, "search", 4)  # 2: the older adjustment empties first
    assert remaining(tk, cid) == {newer_adj: 1, purchase: 10}
    assert bal(tk, cid) == 11


def test_expiring_promo_and_sweep(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    promo = tk.ledger.grant(cid, 20, source="promo", expires_at=clock.now() + timedelta(hours=1))["id"]
    tk.ledger.grant(cid, 5, source="purchase")
    use(tk, cid, quantity=None)
    assert remaining(tk, cid)[promo] == 19
    assert bal(tk, cid) == 24
    clock.advance(timedelta(hours=2))
    assert bal(tk, cid) == 5  # an expired grant is not spendable even before the sweep
    use(tk, cid)
    assert remaining(tk, cid)[promo] == 19
    out = tk.ledger.sweep()
    assert out["grants_expired"] == 1
    assert promo not in remaining(tk, cid)
    assert tk.ledger.sweep()["grants_expired"] == 0
    kinds = [e["kind"] for e in tk.journal(cid)["data"]]
    assert kinds.count("expire") == 1
    assert bal(tk, cid) == 4


# ------------------------------------------------------------------------------------------ holds
def test_hold_expires_by_ttl_and_sweep_releases(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 30)
    h = tk.ledger.create_hold(cid, idempotency_key="h1", amount=12, ttl_seconds=60)
    assert h["status"] == "open" and bal(tk, cid) == 18
    assert tk.balance(cid)["held"] == 12
    again = tk.ledger.create_hold(cid, idempotency_key="h1", amount=12, ttl_seconds=60)
    assert again["duplicate"] and again["id"] == h["id"] and bal(tk, cid) == 18
    with pytest.raises(IdempotencyConflict):
        tk.ledger.create_hold(cid, idempotency_key="h1", amount=13, ttl_seconds=60)
    clock.advance(timedelta(seconds=30))
    assert tk.ledger.sweep()["holds_released"] == 0
    clock.advance(timedelta(seconds=31))
    assert tk.ledger.sweep()["holds_released"] == 1
    assert bal(tk, cid) == 30 and tk.balance(cid)["held"] == 0
    with pytest.raises(Conflict) as e:
        tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=5)
    assert e.value.status == 409
    assert tk.ledger.sweep()["holds_released"] == 0


def test_settle_less_more_and_uncovered(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 50)
    a = tk.ledger.create_hold(cid, idempotency_key="a", amount=10)
    r = tk.ledger.resolve_hold(cid, a["id"], action="settle", amount=4)
    assert r["charged"] == 4 and bal(tk, cid) == 46
    assert tk.ledger.resolve_hold(cid, a["id"], action="settle", amount=4)["duplicate"]
    with pytest.raises(Conflict):
        tk.ledger.resolve_hold(cid, a["id"], action="settle", amount=5)
    with pytest.raises(Conflict):
        tk.ledger.resolve_hold(cid, a["id"], action="release")

    b = tk.ledger.create_hold(cid, idempotency_key="b", amount=10)
    r = tk.ledger.resolve_hold(cid, b["id"], action="settle", amount=25)  # 15 extra drawn
    assert r["charged"] == 25 and bal(tk, cid) == 21

    c = tk.ledger.create_hold(cid, idempotency_key="c", amount=10)
    assert bal(tk, cid) == 11
    with pytest.raises(InsufficientCredits) as e:
        tk.ledger.resolve_hold(cid, c["id"], action="settle", amount=22)  # needs 12 more, 11 left
    assert e.value.status == 402
    assert bal(tk, cid) == 11 and tk.balance(cid)["held"] == 10  # the hold stays open
    r = tk.ledger.resolve_hold(cid, c["id"], action="settle", amount=21)
    assert r["charged"] == 21 and bal(tk, cid) == 0

    d = tk.ledger.create_hold(cid, idempotency_key="d", amount=0)
    assert tk.ledger.resolve_hold(cid, d["id"], action="release")["status"] == "released"


def test_settle_by_quantity_rates_the_meter(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 100)
    h = tk.ledger.create_hold(cid, idempotency_key="q", meter="search", quantity=40)
    assert h["amount"] == 20 and bal(tk, cid) == 80
    r = tk.ledger.resolve_hold(cid, h["id"], action="settle", quantity=7)  # 3.5 -> 4
    assert r["charged"] == 4 and bal(tk, cid) == 96


def test_release_of_overdraft_hold_after_repayment_keeps_credits(tk: Tollkeep) -> None:
    """A hold drawn on the overdraft, the overdraft repaid by a later grant, then the hold released:
    the credits come back (as a new grant) instead of vanishing."""
    cid = new_customer(tk)
    tk.ledger.set_overdraft(cid, 10)
    h = tk.ledger.create_hold(cid, idempotency_key="od", amount=10)
    assert bal(tk, cid) == -10
    tk.ledger.grant(cid, 30)  # repays the overdraft first
    assert bal(tk, cid) == 20 and tk.balance(cid)["overdraft_used"] == 0
    r = tk.ledger.resolve_hold(cid, h["id"], action="release")
    assert r["status"] == "released"
    assert bal(tk, cid) == 30

    h2 = tk.ledger.create_hold(cid, idempotency_key="od2", amount=35)  # 30 credits + 5 overdraft
    assert bal(tk, cid) == -5
    tk.ledger.grant(cid, 5)
    r = tk.ledger.resolve_hold(cid, h2["id"], action="settle", amount=20)
    assert bal(tk, cid) == 15
    assert tk.ledger.refund(r["operation_id"], idempotency_key="rf")["amount"] == 20
    assert bal(tk, cid) == 35


def test_sweep_releases_overdraft_hold_after_repayment(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    tk.ledger.set_overdraft(cid, 8)
    tk.ledger.create_hold(cid, idempotency_key="x", amount=8, ttl_seconds=5)
    tk.ledger.grant(cid, 8)
    assert bal(tk, cid) == 0
    clock.advance(timedelta(seconds=10))
    assert tk.ledger.sweep()["holds_released"] == 1
    assert bal(tk, cid) == 8


# ------------------------------------------------------------------------------------------ refunds
def test_refunds(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk)
    promo = tk.ledger.grant(cid, 10, source="promo", expires_at=clock.now() + timedelta(hours=1))["id"]
    step(clock)
    buy = tk.ledger.grant(cid, 100, source="purchase")["id"]
    ev = tk.ledger.record_usage(UsageRequest(cid, "search", Decimal(30), "s"))  # 15: 10 promo + 5 purchase
    assert ev["charged"] == 15 and remaining(tk, cid) == {buy: 95}

    # partial refund: newest part first (the purchase), back to the original grant
    r1 = tk.ledger.refund(ev["event_id"], idempotency_key="r1", amount=3)
    assert r1["to_original_grants"] == 3 and r1["new_grant_id"] is None
    assert remaining(tk, cid) == {buy: 98}
    dup = tk.ledger.refund(ev["event_id"], idempotency_key="r1", amount=3)
    assert dup["duplicate"] and dup["id"] == r1["id"] and remaining(tk, cid) == {buy: 98}
    with pytest.raises(IdempotencyConflict):
        tk.ledger.refund(ev["event_id"], idempotency_key="r1", amount=4)
    with pytest.raises(Conflict) as e:
        tk.ledger.refund(ev["event_id"], idempotency_key="r-too-much", amount=13)
    assert e.value.status == 409 and e.value.code == "refund_exceeds_charge"

    # the promo part goes back to the promo while it lives
    r2 = tk.ledger.refund(ev["event_id"], idempotency_key="r2", amount=4)
    assert r2["to_original_grants"] == 4
    assert remaining(tk, cid) == {buy: 100, promo: 2}

    # after the promo expired, the rest becomes a new grant
    clock.advance(timedelta(hours=2))
    r3 = tk.ledger.refund(ev["event_id"], idempotency_key="r3")
    assert r3["amount"] == 8 and r3["to_original_grants"] == 0 and r3["new_grant_id"]
    assert remaining(tk, cid)[r3["new_grant_id"]] == 8
    assert bal(tk, cid) == 108
    with pytest.raises(Conflict):
        tk.ledger.refund(ev["event_id"], idempotency_key="r4", amount=1)
    usage = tk.usage(cid)["data"]
    assert usage[0]["refunded"] == 15


def test_refund_of_a_settled_hold(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    g = tk.ledger.grant(cid, 40)["id"]
    h = tk.ledger.create_hold(cid, idempotency_key="h", amount=10)
    s = tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=16)
    assert remaining(tk, cid) == {g: 24}
    with pytest.raises(Conflict):
        tk.ledger.refund(s["operation_id"], idempotency_key="x", amount=17)
    tk.ledger.refund(s["operation_id"], idempotency_key="x", amount=6)
    tk.ledger.refund(s["operation_id"], idempotency_key="y")
    assert remaining(tk, cid) == {g: 40}


# ------------------------------------------------------------------------------------------ overdraft
def test_overdraft_limit_and_repayment(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 3)
    tk.ledger.set_overdraft(cid, 5)
    for _ in range(8):
        use(tk, cid)
    assert bal(tk, cid) == -5
    with pytest.raises(InsufficientCredits):
        use(tk, cid)
    assert tk.balance(cid)["overdraft_used"] == 5 and tk.balance(cid)["available"] == 0
    # a scoped grant does not repay, an unscoped one does, first
    tk.ledger.grant(cid, 4, meter="search")
    assert tk.balance(cid)["overdraft_used"] == 5
    g = tk.ledger.grant(cid, 7)
    assert g["balance"] == 2 + 4
    assert tk.balance(cid)["overdraft_used"] == 0
    assert remaining(tk, cid)[g["id"]] == 2
    # lowering the limit does not write anything off but stops further overdraft
    tk.ledger.set_overdraft(cid, 0)
    use(tk, cid, key="a")
    use(tk, cid, key="b")
    with pytest.raises(InsufficientCredits):
        use(tk, cid)


# ------------------------------------------------------------------------------------------ plans
def test_free_plan_lifetime_allowance(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk, plan="free")
    grants = tk.balance(cid)["grants"]
    assert [(g["source"], g["amount"], g["expires_at"]) for g in grants] == [("plan_allowance", 100, None)]
    for _ in range(3):
        use(tk, cid)
    clock.advance(timedelta(days=70))  # lifetime: never renewed
    use(tk, cid)
    assert bal(tk, cid) == 96
    assert len(tk.balance(cid)["grants"]) == 1


def test_pro_monthly_allowance_renews_lazily(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk, plan="pro")
    use(tk, cid)
    assert bal(tk, cid) == 9_999
    _, end = month_bounds(clock.now())
    clock.set(end + timedelta(hours=1))
    assert bal(tk, cid) == 0  # last month's allowance has ended; the new one comes with usage
    r = use(tk, cid)
    assert r["balance"] == 9_999
    live = [g for g in tk.balance(cid)["grants"] if g["live"]]
    assert len(live) == 1 and live[0]["remaining"] == 9_999
    use(tk, cid)
    assert bal(tk, cid) == 9_998
    tk.ledger.sweep()
    ops = [e["kind"] for e in tk.journal(cid)["data"]]
    assert ops.count("grant") == 2 and ops.count("expire") == 1


CAPS = """
version = "caps"
[credits]
unit = "credit"
[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1
[meters.search]
aggregation = "sum"
[meters.search.price]
model = "per_unit"
unit_price = 1
[plans.capped]
name = "Capped"
[plans.capped.allowance]
amount = 50
period = "month"
[[plans.capped.caps]]
meter = "api_call"
limit = 3
period = "day"
mode = "hard"
[[plans.capped.caps]]
meter = "search"
limit = 10
period = "month"
mode = "allowance"
"""


def test_caps_hard_and_allowance_mode(tk: Tollkeep, clock: FrozenClock) -> None:
    tk.catalogs.set(parse_catalog(CAPS))
    cid = new_customer(tk, plan="capped")
    buy = tk.ledger.grant(cid, 20)["id"]
    for _ in range(3):
        use(tk, cid)
    with pytest.raises(CapExceeded) as e:
        use(tk, cid)
    assert e.value.status == 429
    assert bal(tk, cid) == 67
    # allowance-mode cap: the first 10 searches come out of the allowance...
    r = use(tk, cid, "search", 8)
    assert remaining(tk, cid)[buy] == 20
    use(tk, cid, "search", 2)
    assert remaining(tk, cid)[buy] == 20
    # ...past it, only purchased credits pay
    use(tk, cid, "search", 5)
    left = remaining(tk, cid)
    assert left[buy] == 15 and sum(left.values()) == 15 + 37
    with pytest.raises(InsufficientCredits):
        use(tk, cid, "search", 16)
    assert r["charged"] == 8
    clock.advance(timedelta(days=1))  # the daily hard cap resets
    use(tk, cid)


def test_free_to_pro_carries_unused_allowance_once(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = new_customer(tk, plan="free")
    for _ in range(30):
        use(tk, cid)
    r = tk.plans.change_plan(cid, "pro")
    assert r["carried_over"] == 70 and r["changed"]
    grants = tk.balance(cid)["grants"]
    carried = [g for g in grants if g["source"] == "promo"]
    assert len(carried) == 1 and carried[0]["amount"] == 70 and carried[0]["expires_at"] is None
    assert bal(tk, cid) == 10_000 + 70
    assert tk.plans.change_plan(cid, "pro")["changed"] is False

    step(clock)
    back = tk.plans.change_plan(cid, "free")
    assert back["carried_over"] == 0
    assert bal(tk, cid) == 70  # pro's allowance ends; the lifetime free allowance is not granted twice
    step(clock)
    again = tk.plans.change_plan(cid, "pro")
    assert again["carried_over"] == 0
    assert len([g for g in tk.balance(cid)["grants"] if g["source"] == "promo"]) == 1
    use(tk, cid)


# ------------------------------------------------------------------------------------------ meters
def test_meter_scoped_grants(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    scoped = tk.ledger.grant(cid, 10, meter="search")["id"]
    with pytest.raises(InsufficientCredits):
        use(tk, cid)
    r = use(tk, cid, "search", 4)
    assert r["charged"] == 2 and remaining(tk, cid)[scoped] == 8
    general = tk.ledger.grant(cid, 5)["id"]
    use(tk, cid)
    assert remaining(tk, cid) == {scoped: 8, general: 4}
    use(tk, cid, "search", 20)  # 10: scoped 8 then 2 general
    assert remaining(tk, cid) == {general: 2}


def test_unique_count_charges_new_values_only(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 100)
    assert use(tk, cid, "active_projects", project="alpha")["charged"] == 20
    assert use(tk, cid, "active_projects", project="alpha")["charged"] == 0
    assert use(tk, cid, "active_projects", project="beta")["charged"] == 20
    assert use(tk, cid, "active_projects", project="alpha")["charged"] == 0
    assert bal(tk, cid) == 60


def test_graduated_tiers_across_events(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 10_000)
    charges = [use(tk, cid, "pages", q)["charged"] for q in (60, 60, 900, 100)]
    # 1-100 free, 101-1000 at 0.5, beyond at 0.2
    assert charges[0] == 0
    assert charges[1] == 10  # pages 101-120
    assert charges[2] == 440 + 4  # 121-1000 at 0.5, 1001-1020 at 0.2
    assert charges[3] == 20
    assert bal(tk, cid) == 10_000 - sum(charges)


def test_usage_idempotency(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 10)
    a = use(tk, cid, "search", 4, key="same")
    b = use(tk, cid, "search", 4, key="same")
    assert b["duplicate"] and b["event_id"] == a["event_id"] and bal(tk, cid) == 8
    with pytest.raises(IdempotencyConflict):
        use(tk, cid, "search", 5, key="same")
    with pytest.raises(InsufficientCredits):
        use(tk, cid, "search", 40, key="big")
    tk.ledger.grant(cid, 20)
    assert use(tk, cid, "search", 40, key="big")["charged"] == 20  # a failed key can be retried


# ------------------------------------------------------------------------------------------ catalog versions
def test_catalog_version_recorded_on_each_charge(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    tk.ledger.grant(cid, 100)
    v1 = tk.catalog.version
    a = use(tk, cid)
    text_v2 = tk.catalog.text.replace('version = "2026-01-01"', 'version = "2026-02-01"').replace(
        '[meters.api_call.price]\nmodel = "flat"\namount = 1',
        '[meters.api_call.price]\nmodel = "flat"\namount = 3',
    )
    v2 = tk.catalogs.load_text(text_v2).version
    assert v2 != v1
    b = use(tk, cid)
    assert (a["catalog_version"], a["charged"]) == (v1, 1)
    assert (b["catalog_version"], b["charged"]) == (v2, 3)
    items = {i["event_id"]: i["catalog_version"] for i in tk.usage(cid)["data"]}
    assert items == {a["event_id"]: v1, b["event_id"]: v2}


def test_catalog_reload_from_file(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    base = Tollkeep(make_settings(db_url), clock=clock)
    text_v1 = base.catalog.text
    base.close()
    path = tmp_path / "tollkeep.toml"
    path.write_text(text_v1)
    rt = Tollkeep(make_settings(db_url, catalog_path=str(path)), clock=clock)
    try:
        cid = new_customer(rt)
        rt.ledger.grant(cid, 100)
        a = use(rt, cid, "search", 10)
        path.write_text(text_v1.replace('unit_price = "0.5"', 'unit_price = "1"'))
        v2 = rt.reload_catalog().version
        b = use(rt, cid, "search", 10)
        assert a["charged"] == 5 and b["charged"] == 10
        assert a["catalog_version"] != v2 == b["catalog_version"]
        assert rt.verify().ok
    finally:
        rt.close()


# ------------------------------------------------------------------------------------------ verify
def test_verify_catches_a_tampered_grant(tk: Tollkeep) -> None:
    cid = new_customer(tk)
    gid = tk.ledger.grant(cid, 10)["id"]
    use(tk, cid)
    assert tk.verify().ok
    with tk.db.scope() as s:
        s.execute(text("UPDATE grants SET remaining = remaining + 5 WHERE id = :id"), {"id": gid})
    report = tk.verify()
    assert not report.ok
    assert any(gid in p and "journal sums to 9" in p for p in report.problems), report.problems
    with tk.db.scope() as s:
        s.execute(text("UPDATE grants SET remaining = remaining - 5 WHERE id = :id"), {"id": gid})
    assert tk.verify().ok
