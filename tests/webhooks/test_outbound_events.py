"""Each outbound event is written to the outbox once, in the transaction of the change it
reports, and not when that change rolls back or changes nothing: customer.created, key.created,
key.revoked, plan.changed, and on the debit path credits.low / credits.exhausted only when a
charge, a hold or a settle crosses the line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, InsufficientCredits
from tollkeep.ledger import UsageRequest
from tollkeep.runtime import Tollkeep

LOW = 10  # [credits] low_balance
FREE_LOW = 95  # [plans.free] low_balance


@pytest.fixture
def tk(db_url: str, clock: FrozenClock, tmp_path: Path) -> Iterator[Tollkeep]:
    text = DEFAULT_CATALOG_TEXT.replace("# low_balance = 100", f"low_balance = {LOW}", 1)
    text = text.replace("[plans.free]\n", f"[plans.free]\nlow_balance = {FREE_LOW}\n", 1)
    catalog = tmp_path / "tollkeep.toml"
    catalog.write_text(text)
    runtime = Tollkeep(make_settings(db_url, catalog_path=catalog), clock=clock)
    assert (
        runtime.catalog.low_balance_for(None) == LOW and runtime.catalog.low_balance_for("free") == FREE_LOW
    )
    try:
        yield runtime
        report = runtime.verify()
        assert report.ok, report.problems
    finally:
        runtime.close()


def payloads(tk: Tollkeep, topic: str) -> list[dict[str, Any]]:
    return [r["payload"] for r in reversed(tk.outbox.recent(topic=topic))]


def charge(tk: Tollkeep, cid: str, key: str) -> dict[str, Any]:
    return tk.ledger.record_usage(UsageRequest(cid, "api_call", None, key))


def test_customer_created_once(tk: Tollkeep) -> None:
    cid = tk.customers.create("ann", plan="free")["id"]
    with pytest.raises(Conflict):
        tk.customers.create("ann")
    (p,) = payloads(tk, "customer.created")
    assert p["customer_id"] == cid and p["plan"] == "free"
    assert payloads(tk, "plan.changed") == []  # the plan a customer starts on is no change


def test_key_created_and_revoked_once(tk: Tollkeep) -> None:
    cid = tk.customers.create("ben")["id"]
    key = tk.keys.create(cid, name="laptop")
    assert tk.keys.create(cid)["reused"] is True  # the same key back: nothing issued
    (created,) = payloads(tk, "key.created")
    assert created == {
        "customer_id": cid,
        "key_id": key["id"],
        "prefix": key["prefix"],
        "name": "laptop",
        "scopes": key["scopes"],
        "expires_at": None,
        "rotated_from": None,
    }
    assert key["key"] not in str(tk.outbox.recent())  # never the plaintext
    tk.keys.suspend(key["id"])
    tk.keys.revoke(key["id"])
    with pytest.raises(Conflict):
        tk.keys.resume(key["id"])
    tk.keys.revoke(key["id"])  # revoked already: no second event
    assert payloads(tk, "key.revoked") == [{"customer_id": cid, "key_id": key["id"], "prefix": key["prefix"]}]
    other = tk.keys.create(cid, force_new=True)
    new = tk.keys.rotate(other["id"])  # no grace: the old key is revoked now
    assert [p["key_id"] for p in payloads(tk, "key.created")] == [key["id"], other["id"], new["id"]]
    assert payloads(tk, "key.created")[-1]["rotated_from"] == other["id"]
    assert [p["key_id"] for p in payloads(tk, "key.revoked")] == [key["id"], other["id"]]


def test_plan_changed_only_when_it_changes(tk: Tollkeep) -> None:
    cid = tk.customers.create("cat", plan="free")["id"]
    tk.plans.change_plan(cid, "pro")
    tk.plans.change_plan(cid, "pro")
    tk.plans.change_plan(cid, None)
    assert [(p["previous"], p["plan"]) for p in payloads(tk, "plan.changed")] == [
        ("free", "pro"),
        ("pro", None),
    ]


def test_credits_low_and_exhausted_fire_once_on_crossing(tk: Tollkeep) -> None:
    cid = tk.customers.create("dan")["id"]
    tk.ledger.grant(cid, 12, idempotency_key="g")
    for i in range(2):  # 12 -> 10: at the threshold, not below
        charge(tk, cid, f"u{i}")
    assert payloads(tk, "credits.low") == []
    charge(tk, cid, "u2")  # 10 -> 9
    (low,) = payloads(tk, "credits.low")
    assert low["customer_id"] == cid and (low["before"], low["available"], low["threshold"]) == (10, 9, LOW)
    assert low["unit"] == "credit" and low["operation_id"].startswith("evt_")
    charge(tk, cid, "u2")  # a replay: nothing moves, nothing said
    for i in range(3, 11):  # 9 -> 1: low already
        charge(tk, cid, f"u{i}")
    assert len(payloads(tk, "credits.low")) == 1 and payloads(tk, "credits.exhausted") == []
    charge(tk, cid, "u11")  # 1 -> 0
    (gone,) = payloads(tk, "credits.exhausted")
    assert (gone["before"], gone["available"]) == (1, 0)
    with pytest.raises(InsufficientCredits):
        charge(tk, cid, "u12")
    tk.ledger.grant(cid, 5, idempotency_key="g2")  # back above 0, below the threshold
    charge(tk, cid, "u13")
    assert len(payloads(tk, "credits.low")) == 1 and len(payloads(tk, "credits.exhausted")) == 1


def test_holds_and_settles_cross_too(tk: Tollkeep) -> None:
    cid = tk.customers.create("eve")["id"]
    tk.ledger.grant(cid, 15, idempotency_key="g")
    hold = tk.ledger.create_hold(cid, idempotency_key="h1", amount=2)  # 15 -> 13
    assert payloads(tk, "credits.low") == []
    tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=15)  # draws 13 more: 13 -> 0
    assert [p["before"] for p in payloads(tk, "credits.low")] == [13]
    assert [p["before"] for p in payloads(tk, "credits.exhausted")] == [13]
    other = tk.customers.create("fay")["id"]
    tk.ledger.grant(other, 11, idempotency_key="g")
    h = tk.ledger.create_hold(other, idempotency_key="h", amount=3)  # 11 -> 8: low
    tk.ledger.resolve_hold(other, h["id"], action="settle", amount=1)  # gives 2 back: nothing
    assert [p["customer_id"] for p in payloads(tk, "credits.low")] == [cid, other]


def test_the_overdraft_counts_as_available(tk: Tollkeep) -> None:
    cid = tk.customers.create("gil")["id"]
    tk.ledger.set_overdraft(cid, 5)
    tk.ledger.grant(cid, 6, idempotency_key="g")  # available 11
    charge(tk, cid, "a")  # 11 -> 10
    charge(tk, cid, "b")  # 10 -> 9: low
    assert len(payloads(tk, "credits.low")) == 1
    for i in range(8):  # 9 -> 1 (balance -4: overdraft drawn), then -> 0 available
        charge(tk, cid, f"c{i}")
    assert payloads(tk, "credits.exhausted") == []
    charge(tk, cid, "d")
    (gone,) = payloads(tk, "credits.exhausted")
    assert gone["available"] == 0 and tk.balance(cid)["balance"] == -5


def test_a_plan_sets_its_own_threshold(tk: Tollkeep) -> None:
    cid = tk.customers.create("hal", plan="free")["id"]  # 100 credits of allowance, low at 95
    for i in range(5):  # 100 -> 95
        charge(tk, cid, f"u{i}")
    assert payloads(tk, "credits.low") == []
    charge(tk, cid, "u5")
    assert [p["threshold"] for p in payloads(tk, "credits.low")] == [FREE_LOW]


def test_an_event_rolls_back_with_its_charge(tk: Tollkeep) -> None:
    cid = tk.customers.create("ida")["id"]
    tk.ledger.grant(cid, 1, idempotency_key="g")
    usage = tk.ledger.usage_fn(UsageRequest(cid, "api_call", None, "u"))

    def charge_then_fail(s: Tx) -> None:
        usage(s)  # 1 -> 0: low and exhausted emitted in this transaction
        raise Conflict("refused after the charge", code="test_failure")

    with pytest.raises(Conflict):
        tk.executor.call(charge_then_fail, key=cid)
    assert payloads(tk, "credits.low") == [] and payloads(tk, "credits.exhausted") == []
    assert tk.balance(cid)["balance"] == 1
    charge(tk, cid, "u")
    assert len(payloads(tk, "credits.exhausted")) == 1
