"""Exact-value edge cases of the ledger, through the real service on SQLite and PostgreSQL, and
the reproductions of issue 5's ledger bugs 1-6.

Each test here names the exact value it expects: a 409 for a key reused with other properties,
a balance that does not move when a hold's credits go back to an expired grant, a grant dead at
its exact ``expires_at`` instant, the credits of a released hold back in the very grants they
came from, every acknowledged hold still there after ``kill -9``.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import Conflict, IdempotencyConflict, InsufficientCredits
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import bearer, make_settings
from ..factories import free_port, kill_during_storm, start_server
from . import ledger_bug_repros


def customer(tk: Tollkeep, name: str, credits: int = 0) -> str:
    cid = str(tk.customers.create(name)["id"])
    if credits:
        tk.ledger.grant(cid, credits, idempotency_key="opening")
    return cid


def grants(tk: Tollkeep, cid: str) -> dict[str, int]:
    return {g["id"]: g["remaining"] for g in tk.balance(cid)["grants"]}


# ------------------------------------------------------------------------------------------ idempotency
def test_same_usage_key_with_other_properties_is_a_conflict(tk: Tollkeep) -> None:
    cid = customer(tk, "props", 100)
    first = tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "k", {"route": "/a"}))
    again = tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "k", {"route": "/a"}))
    assert again["duplicate"] and again["event_id"] == first["event_id"]
    for other in ({"route": "/b"}, {"route": "/a", "extra": 1}, None):
        with pytest.raises(IdempotencyConflict) as e:
            tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "k", other))
        assert e.value.status == 409
    assert tk.balance(cid)["balance"] == 99


def test_same_hold_key_with_other_properties_is_a_conflict(tk: Tollkeep) -> None:
    cid = customer(tk, "hold-props", 100)
    est = {"model": "gpt-4o", "input_tokens": 1000, "output_tokens": 1000}
    h = tk.ledger.create_hold(cid, idempotency_key="h", meter="llm_tokens", quantity=2000, properties=est)
    same = tk.ledger.create_hold(cid, idempotency_key="h", meter="llm_tokens", quantity=2000, properties=est)
    assert same["duplicate"] and same["id"] == h["id"]
    with pytest.raises(IdempotencyConflict):
        tk.ledger.create_hold(
            cid,
            idempotency_key="h",
            meter="llm_tokens",
            quantity=2000,
            properties={**est, "model": "gpt-4o-mini"},
        )
    done = tk.ledger.resolve_hold(
        cid, h["id"], action="settle", quantity=10, properties={"input_tokens": 5, "output_tokens": 5}
    )
    with pytest.raises(Conflict) as e:  # the same settle with other properties
        tk.ledger.resolve_hold(
            cid, h["id"], action="settle", quantity=10, properties={"input_tokens": 6, "output_tokens": 4}
        )
    assert e.value.code == "hold_resolved"
    again = tk.ledger.resolve_hold(
        cid, h["id"], action="settle", quantity=10, properties={"input_tokens": 5, "output_tokens": 5}
    )
    assert again["duplicate"] and again["operation_id"] == done["operation_id"]
    assert again["charged"] == done["charged"]


def test_same_key_with_other_properties_over_http_is_409(client: TestClient, tk: Tollkeep) -> None:
    cid = customer(tk, "http-props", 10)
    key = tk.keys.create(cid)["key"]
    body = {"meter": "api_call", "idempotency_key": "req-1", "properties": {"a": 1}}
    assert client.post("/v1/usage", json=body, headers=bearer(key)).status_code == 200
    r = client.post("/v1/usage", json={**body, "properties": {"a": 2}}, headers=bearer(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"


# ------------------------------------------------------------------------------------------ expiry
def test_grant_is_dead_at_its_exact_expiry_instant(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(tk, "instant")
    expires = clock.now() + timedelta(seconds=10)
    gid = tk.ledger.grant(cid, 5, source="promo", expires_at=expires, idempotency_key="p")["id"]
    clock.set(expires - timedelta(microseconds=1))
    assert tk.balance(cid)["balance"] == 5  # live until the instant before
    clock.set(expires)
    b = tk.balance(cid)
    assert b["balance"] == 0 and b["available"] == 0
    assert [g["live"] for g in b["grants"] if g["id"] == gid] == [False]
    with pytest.raises(InsufficientCredits) as e:
        tk.ledger.record_usage(UsageRequest(cid, "api_call", None, "at-expiry"))
    assert e.value.details["available"] == 0
    with pytest.raises(InsufficientCredits):
        tk.ledger.create_hold(cid, idempotency_key="h", amount=1)
    assert tk.ledger.sweep()["grants_expired"] == 1


def test_grant_expiring_mid_hold_stays_dead_when_the_hold_is_released(
    tk: Tollkeep, clock: FrozenClock
) -> None:
    cid = customer(tk, "release-expired")
    promo = tk.ledger.grant(
        cid, 10, source="promo", expires_at=clock.now() + timedelta(hours=1), idempotency_key="p"
    )["id"]
    tk.ledger.grant(cid, 4, source="purchase", idempotency_key="buy")
    h1 = tk.ledger.create_hold(cid, idempotency_key="h1", amount=6, ttl_seconds=7200)  # promo 6
    h2 = tk.ledger.create_hold(cid, idempotency_key="h2", amount=6, ttl_seconds=7200)  # promo 4 + purchase 2
    clock.advance(timedelta(hours=1))  # the promo is dead at this exact instant
    assert tk.balance(cid)["balance"] == 2
    tk.ledger.resolve_hold(cid, h1["id"], action="release")
    assert tk.balance(cid)["balance"] == 2, "credits of an expired grant came back to life"
    tk.ledger.resolve_hold(cid, h2["id"], action="settle", amount=1)  # 5 back: purchase 2, promo 3
    assert tk.balance(cid)["balance"] == 4
    tk.ledger.sweep()
    assert tk.balance(cid)["balance"] == 4 and promo not in grants(tk, cid)


# ------------------------------------------------------------------------------------ where credits go back
def test_released_hold_returns_credits_to_the_grants_they_came_from(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(tk, "back-home")
    promo = tk.ledger.grant(
        cid, 10, source="promo", expires_at=clock.now() + timedelta(days=3), idempotency_key="p"
    )["id"]
    buy = tk.ledger.grant(cid, 10, source="purchase", idempotency_key="buy")["id"]
    h = tk.ledger.create_hold(cid, idempotency_key="h", amount=15)
    assert grants(tk, cid) == {buy: 5}
    tk.ledger.resolve_hold(cid, h["id"], action="release")
    assert grants(tk, cid) == {promo: 10, buy: 10}, "a release must not mint a new grant"
    h = tk.ledger.create_hold(cid, idempotency_key="h2", amount=15)
    tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=12)  # 3 back: to the purchase
    assert grants(tk, cid) == {buy: 8}


def test_release_after_overdraft_repaid_keeps_the_total(tk: Tollkeep) -> None:
    """A hold on the overdraft, repaid by a grant meanwhile: released, nothing is lost or made."""
    cid = customer(tk, "od-release")
    tk.ledger.set_overdraft(cid, 10)
    h = tk.ledger.create_hold(cid, idempotency_key="h", amount=7)
    tk.ledger.grant(cid, 5, source="purchase", idempotency_key="buy")
    assert tk.balance(cid)["balance"] == -2
    tk.ledger.resolve_hold(cid, h["id"], action="release")
    b = tk.balance(cid)
    assert b["balance"] == 5 and b["overdraft_used"] == 0 and b["held"] == 0


# ------------------------------------------------------------------------------------------ kill -9
def test_holds_in_flight_survive_kill_9(db_url: str, tmp_path: Path) -> None:
    """kill -9 the server while holds are being made: every acknowledged hold is there and open,
    the balance is exactly what the stored holds took, and after their TTL the sweeper gives
    every credit back."""
    start = 10_000
    with Tollkeep(make_settings(db_url)) as tk:
        cid = tk.customers.create("in-flight")["id"]
        tk.ledger.grant(cid, start, idempotency_key="big")
        key = tk.keys.create(cid)["key"]
    port = free_port()
    proc = start_server(db_url, port, tmp_path)
    acked: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=bearer(key)) as c:
            i = 0
            while not stop.is_set():
                i += 1
                body = {"amount": 1 + i % 3, "ttl_seconds": 600, "idempotency_key": f"h{n}-{i}"}
                try:
                    r = c.post("/v1/holds", json=body, timeout=5)
                except httpx.HTTPError:
                    return
                if r.status_code == 201:
                    with lock:
                        acked[r.json()["id"]] = body["amount"]

    kill_during_storm(proc, hammer, workers=6, stop=stop, enough=lambda: len(acked) >= 150)
    assert len(acked) >= 150, "too few holds acknowledged to make the test meaningful"
    later = FrozenClock(datetime.now(UTC))
    with Tollkeep(make_settings(db_url), clock=later) as tk:
        stored = {h: tk.hold(cid, h) for h in acked}
        assert all(v["status"] == "open" and v["amount"] == acked[h] for h, v in stored.items())
        b = tk.balance(cid)
        assert b["balance"] == start - b["held"] and b["held"] >= sum(acked.values())
        assert tk.verify().ok
        later.set(_after_ttl(stored))
        tk.ledger.sweep()
        b = tk.balance(cid)
        assert b["balance"] == start and b["held"] == 0
        assert tk.verify().ok


def _after_ttl(holds: dict[str, dict[str, Any]]) -> datetime:
    latest = max(datetime.fromisoformat(h["expires_at"].replace("Z", "+00:00")) for h in holds.values())
    return latest + timedelta(seconds=1)


# ------------------------------------------------------------------------------------------ issue 5, bugs 1-6
@pytest.mark.parametrize("bug", sorted(ledger_bug_repros.REPROS), ids=lambda n: f"bug{n}")
def test_issue_5_reproduction(tk: Tollkeep, clock: FrozenClock, bug: int) -> None:
    """The issue's reproductions of bugs 1-6 (see ledger_bug_repros.py) behave as documented."""
    assert ledger_bug_repros.REPROS[bug](tk, clock) == []
