"""Holds can be extended before they expire (issue #7 item 9), and every duplicate reply
carries the wallet's balance now (item 10). The ledger is verified after every test."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def _hold(client: TestClient, key: str, amount: int = 5, ttl: int = 60, **kw: object) -> str:
    r = client.post(
        "/v1/holds",
        headers=bearer(key),
        json={"amount": amount, "idempotency_key": f"h-{amount}-{ttl}", "ttl_seconds": ttl, **kw},
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_an_extended_hold_outlives_its_first_expiry(
    client: TestClient, tk: Tollkeep, clock: FrozenClock
) -> None:
    _, key = new_customer(client, "alice", credits=10)
    hid = _hold(client, key, ttl=60)
    clock.advance(timedelta(seconds=50))
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 600})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["id"] == hid and out["status"] == "open" and out["balance"] == 5
    assert datetime.fromisoformat(out["expires_at"]) == clock.now() + timedelta(seconds=600)
    # past the first expiry the sweeper leaves it alone; the hold can still be settled
    clock.advance(timedelta(seconds=120))
    assert tk.ledger.sweep()["holds_released"] == 0
    assert client.get(f"/v1/holds/{hid}", headers=bearer(key)).json()["status"] == "open"
    settled = client.post(f"/v1/holds/{hid}/settle", headers=bearer(key), json={"amount": 3})
    assert settled.status_code == 200 and settled.json()["balance"] == 7
    # a resolved hold cannot be extended
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 60})
    assert r.status_code == 409 and r.json()["error"]["code"] == "hold_resolved"
    # nothing moved in the journal for the extension: the entries are the hold's and the settle's
    assert tk.balance(out["customer_id"])["balance"] == 7


def test_the_sweeper_releases_an_extended_hold_at_its_new_expiry(
    client: TestClient, tk: Tollkeep, clock: FrozenClock
) -> None:
    _, key = new_customer(client, "alice", credits=10)
    hid = _hold(client, key, ttl=60)
    assert (
        client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 300}).status_code
        == 200
    )
    clock.advance(timedelta(seconds=299))
    assert tk.ledger.sweep()["holds_released"] == 0
    clock.advance(timedelta(seconds=2))
    assert tk.ledger.sweep()["holds_released"] == 1
    assert client.get(f"/v1/holds/{hid}", headers=bearer(key)).json()["status"] == "expired"


def test_extending_never_shortens_and_checks_the_ttl(client: TestClient, clock: FrozenClock) -> None:
    _, key = new_customer(client, "alice", credits=10)
    hid = _hold(client, key, ttl=600)
    first = client.get(f"/v1/holds/{hid}", headers=bearer(key)).json()["expires_at"]
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 10})
    assert r.status_code == 200 and r.json()["expires_at"] == first
    for ttl in (0, 86_401):
        r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": ttl})
        assert r.status_code == 422, (ttl, r.text)
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 86_401})
    assert r.json()["error"]["code"] == "invalid_ttl"
    clock.advance(timedelta(seconds=601))
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(key), json={"ttl_seconds": 60})
    assert r.status_code == 409 and r.json()["error"]["code"] == "hold_expired"
    r = client.post("/v1/holds/hld_nope/extend", headers=bearer(key), json={"ttl_seconds": 60})
    assert r.status_code == 404 and r.json()["error"]["code"] == "hold_not_found"


def test_a_server_keys_hold_is_extended_by_a_server_key_only(client: TestClient, tk: Tollkeep) -> None:
    r = client.post("/admin/server-keys", json={"name": "backend"})
    sk = bearer(r.json()["key"])
    alice, alice_key = new_customer(client, "alice", credits=10)
    bob, bob_key = new_customer(client, "bob", credits=10)
    hold = client.post(
        "/v1/holds", headers=sk, json={"amount": 5, "idempotency_key": "h", "customer_id": alice}
    )
    hid = hold.json()["id"]
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(alice_key), json={"ttl_seconds": 600})
    assert r.status_code == 403 and r.json()["error"]["code"] == "hold_owned_by_server"
    r = client.post(f"/v1/holds/{hid}/extend", headers=bearer(bob_key), json={"ttl_seconds": 600})
    assert r.status_code == 404 and r.json()["error"]["code"] == "hold_not_found"
    r = client.post(f"/v1/holds/{hid}/extend", headers=sk, json={"ttl_seconds": 600})
    assert r.status_code == 200 and r.json()["balance"] == 5
    # the admin, through the service
    out = tk.ledger.extend_hold(None, hid, ttl_seconds=3600)
    assert out["id"] == hid and out["status"] == "open"
    assert client.post(f"/v1/holds/{hid}/release", headers=sk).status_code == 200
    assert bob


# ---- item 10: duplicate replies include the balance -------------------------------------------------
def test_every_duplicate_reply_carries_the_balance_now(client: TestClient) -> None:
    cid, key = new_customer(client, "alice", credits=0)
    grant = {"amount": 20, "source": "purchase", "idempotency_key": "g1"}
    first = client.post(f"/admin/customers/{cid}/grants", json=grant)
    assert first.status_code == 201 and first.json()["balance"] == 20
    usage = client.post("/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "u1"})
    charged = usage.json()["charged"]
    again = client.post(f"/admin/customers/{cid}/grants", json=grant)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["balance"] == 20 - charged  # the balance now, not the one at the grant

    hold_body = {"amount": 5, "idempotency_key": "h1"}
    hold = client.post("/v1/holds", headers=bearer(key), json=hold_body).json()
    h_again = client.post("/v1/holds", headers=bearer(key), json=hold_body)
    assert h_again.status_code == 200 and h_again.json()["duplicate"] is True
    assert h_again.json()["balance"] == hold["balance"] == 15 - charged

    settle = client.post(f"/v1/holds/{hold['id']}/settle", headers=bearer(key), json={"amount": 2}).json()
    s_again = client.post(f"/v1/holds/{hold['id']}/settle", headers=bearer(key), json={"amount": 2}).json()
    assert s_again["duplicate"] is True and s_again["balance"] == settle["balance"] == 18 - charged

    h2 = client.post("/v1/holds", headers=bearer(key), json={"amount": 4, "idempotency_key": "h2"}).json()
    rel = client.post(f"/v1/holds/{h2['id']}/release", headers=bearer(key)).json()
    r_again = client.post(f"/v1/holds/{h2['id']}/release", headers=bearer(key)).json()
    assert r_again["duplicate"] is True and r_again["balance"] == rel["balance"] == 18 - charged

    refund = {"idempotency_key": "r1", "amount": 1}
    ref = client.post(f"/admin/charges/{settle['operation_id']}/refund", json=refund).json()
    ref_again = client.post(f"/admin/charges/{settle['operation_id']}/refund", json=refund)
    assert ref_again.status_code == 200 and ref_again.json()["duplicate"] is True
    assert ref_again.json()["balance"] == ref["balance"] == 19 - charged
    # a duplicate answer is the first one, with the balance now and duplicate: true
    assert {k: v for k, v in ref_again.json().items() if k != "duplicate"} == {
        k: v for k, v in ref.items() if k != "duplicate"
    }
