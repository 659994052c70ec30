"""The gateways' hot path, hold → settle | release, on its prebuilt statements.

A customer's settle or release locks the customer's wallet first and then reads the hold with
its journal entries (one statement); the hold must still be that customer's (404 otherwise,
whatever the caller's wallet holds), and a hold resolves once. On SQLite the statements each
call runs are counted (no timing): a hold and its settle or release cost about what a debit
costs, one statement more each at most.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event

from tollkeep.kit.errors import Conflict, NotFound
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep


def _customer(tk: Tollkeep, name: str, credits: int) -> str:
    cid = str(tk.customers.create(name)["id"])
    tk.ledger.grant(cid, credits, source="purchase", idempotency_key=f"g-{name}")
    return cid


def test_another_customers_hold_is_not_found_and_stays_open(tk: Tollkeep) -> None:
    alice = _customer(tk, "alice", 100)
    bob = _customer(tk, "bob", 100)
    hid = tk.ledger.create_hold(alice, idempotency_key="h", amount=30)["id"]
    for who in (bob, "cus_nobody"):
        for action, kw in (("settle", {"amount": 5}), ("release", {})):
            with pytest.raises(NotFound) as e:
                tk.ledger.resolve_hold(who, hid, action=action, **kw)
            assert e.value.code == "hold_not_found"
        with pytest.raises(NotFound):
            tk.ledger.extend_hold(who, hid, ttl_seconds=60)
    assert tk.hold(alice, hid)["status"] == "open"
    assert tk.balance(bob)["balance"] == 100
    out = tk.ledger.resolve_hold(alice, hid, action="settle", amount=12)
    assert (out["settled_amount"], out["balance"]) == (12, 88)
    # resolves once: the same settle again is a replay, a release after it a conflict
    again = tk.ledger.resolve_hold(alice, hid, action="settle", amount=12)
    assert again["duplicate"] is True and again["balance"] == 88
    with pytest.raises(Conflict) as c:
        tk.ledger.resolve_hold(alice, hid, action="release")
    assert c.value.code == "hold_resolved"


def test_a_hold_over_several_grants_and_the_overdraft_gives_back_exactly(tk: Tollkeep) -> None:
    """The hold's entries (read with it, in one statement) are what settle and release return."""
    cid = _customer(tk, "carol", 10)
    tk.ledger.grant(cid, 7, source="promo", idempotency_key="promo")
    tk.ledger.set_overdraft(cid, 5)
    held = tk.ledger.create_hold(cid, idempotency_key="h1", amount=20)  # 7 promo + 10 + 3 overdraft
    assert held["balance"] == -3
    released = tk.ledger.resolve_hold(cid, held["id"], action="release")
    assert released["balance"] == 17
    h2 = tk.ledger.create_hold(cid, idempotency_key="h2", amount=20)
    settled = tk.ledger.resolve_hold(cid, h2["id"], action="settle", amount=9)
    assert settled["balance"] == 8
    h3 = tk.ledger.create_hold(cid, idempotency_key="h3", amount=2)
    more = tk.ledger.resolve_hold(cid, h3["id"], action="settle", amount=11)  # 3 beyond: overdraft
    assert more["balance"] == -3


@contextmanager
def _sqlite_statements(tk: Tollkeep) -> Iterator[list[str]]:
    """Every data statement (SELECT, INSERT, UPDATE, DELETE) SQLite runs meanwhile."""
    seen: list[str] = []

    def trace(sql: str) -> None:
        word = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
        if word in {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}:
            seen.append(sql)

    def on_checkout(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.set_trace_callback(trace)

    def on_checkin(dbapi_conn: Any, *_: Any) -> None:
        dbapi_conn.set_trace_callback(None)

    engine = tk.db.engine
    event.listen(engine, "checkout", on_checkout)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield seen
    finally:
        event.remove(engine, "checkout", on_checkout)
        event.remove(engine, "checkin", on_checkin)


def test_a_hold_and_its_resolution_cost_about_a_debit_each(tk: Tollkeep) -> None:
    if not tk.db.is_sqlite:
        pytest.skip("counts SQLite's statements (its trace callback)")
    cid = _customer(tk, "dave", 1_000)
    key = tk.keys.create(cid, force_new=True, limits={"spend_limit_daily": 500})["id"]
    # warm: the first of each reads what later ones do not (the plan allowance, key rows)
    tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "warm", api_key_id=key))
    warm = tk.ledger.create_hold(cid, idempotency_key="warm", amount=1, api_key_id=key)
    tk.ledger.resolve_hold(cid, warm["id"], action="settle", amount=1)

    def count(fn: Any) -> tuple[int, Any]:
        with _sqlite_statements(tk) as seen:
            out = fn()
        return len(seen), out

    before = tk.ledger.key_spend(key)["day"]["spent"]
    debit, charged = count(
        lambda: tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "u", api_key_id=key))
    )
    hold, h = count(lambda: tk.ledger.create_hold(cid, idempotency_key="a", amount=3, api_key_id=key))
    settle, _ = count(lambda: tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=2))
    h2 = tk.ledger.create_hold(cid, idempotency_key="b", amount=3, api_key_id=key)
    release, _ = count(lambda: tk.ledger.resolve_hold(cid, h2["id"], action="release"))
    assert debit > 0
    assert hold <= debit + 1, (hold, debit)
    assert settle <= debit + 1, (settle, debit)
    assert release <= debit + 1, (release, debit)
    # and the key's day counts the debit and the settled 2; the released hold frees its 3
    day = tk.ledger.key_spend(key)["day"]
    assert (day["spent"] - before, day["held"]) == (charged["charged"] + 2, 0)
