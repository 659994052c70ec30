"""A seller's backend meters any customer with a server key: by customer id, or by verifying
the buyer's key and charging it in one call; a hold it opens cannot be undone with the buyer's
key (issue #7, item 1). The ledger is verified after every test (the ``tk`` fixture)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.conftest import bearer, make_settings
from tests.factories import new_customer
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def server_key(client: TestClient, *scopes: str) -> dict[str, str]:
    body = {"name": "backend", **({"scopes": list(scopes)} if scopes else {})}
    r = client.post("/admin/server-keys", json=body)
    assert r.status_code == 201, r.text
    return bearer(r.json()["key"])


def test_a_server_key_charges_the_customer_it_names(client: TestClient) -> None:
    sk = server_key(client)
    alice, _ = new_customer(client, "alice", credits=10)
    bob, _ = new_customer(client, "bob", credits=10)
    r = client.post(
        "/v1/usage", headers=sk, json={"meter": "api_call", "idempotency_key": "u1", "customer_id": alice}
    )
    assert r.status_code == 200 and r.json()["balance"] == 9
    again = client.post(
        "/v1/usage", headers=sk, json={"meter": "api_call", "idempotency_key": "u1", "customer_id": alice}
    )
    assert again.json()["duplicate"] is True
    assert client.get("/v1/balance", headers=sk, params={"customer_id": alice}).json()["balance"] == 9
    assert client.get("/v1/balance", headers=sk, params={"customer_id": bob}).json()["balance"] == 10
    usage = client.get("/v1/usage", headers=sk, params={"customer_id": alice}).json()
    assert [e["event_id"] for e in usage["data"]] == [r.json()["event_id"]]


def test_a_server_key_must_name_an_existing_customer(client: TestClient) -> None:
    sk = server_key(client)
    r = client.post("/v1/usage", headers=sk, json={"meter": "api_call", "idempotency_key": "u1"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "customer_id_required"
    r = client.post(
        "/v1/usage",
        headers=sk,
        json={"meter": "api_call", "idempotency_key": "u1", "customer_id": "cus_nope"},
    )
    assert r.status_code == 404 and r.json()["error"]["code"] == "customer_not_found"
    assert client.get("/v1/balance", headers=sk).status_code == 422


def test_a_buyer_key_acts_for_its_own_customer_only(client: TestClient) -> None:
    alice, alice_key = new_customer(client, "alice", credits=10)
    bob, _ = new_customer(client, "bob", credits=10)
    body = {"meter": "api_call", "idempotency_key": "u1", "customer_id": bob}
    r = client.post("/v1/usage", headers=bearer(alice_key), json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "customer_mismatch"
    own = client.post("/v1/usage", headers=bearer(alice_key), json={**body, "customer_id": alice})
    assert own.status_code == 200 and own.json()["balance"] == 9
    assert (
        client.get("/v1/balance", headers=bearer(alice_key), params={"customer_id": bob}).status_code == 403
    )


def test_a_hold_the_server_opened_cannot_be_undone_with_the_buyers_key(client: TestClient) -> None:
    sk = server_key(client)
    alice, alice_key = new_customer(client, "alice", credits=10)
    hold = client.post(
        "/v1/holds", headers=sk, json={"amount": 5, "idempotency_key": "h1", "customer_id": alice}
    )
    assert hold.status_code == 201, hold.text
    hid = hold.json()["id"]
    buyer = bearer(alice_key)
    for path, body in ((f"/v1/holds/{hid}/release", None), (f"/v1/holds/{hid}/settle", {"amount": 0})):
        r = client.post(path, headers=buyer, json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "hold_owned_by_server", path
    assert client.get(f"/v1/holds/{hid}", headers=buyer).json()["status"] == "open"
    settled = client.post(f"/v1/holds/{hid}/settle", headers=sk, json={"amount": 4})
    assert settled.status_code == 200 and settled.json()["charged"] == 4
    assert client.get("/v1/balance", headers=buyer).json()["balance"] == 6


def test_a_server_key_may_resolve_a_buyers_own_hold(client: TestClient) -> None:
    sk = server_key(client)
    alice, alice_key = new_customer(client, "alice", credits=10)
    hid = client.post(
        "/v1/holds", headers=bearer(alice_key), json={"amount": 3, "idempotency_key": "h"}
    ).json()["id"]
    assert client.post(f"/v1/holds/{hid}/release", headers=sk).json()["status"] == "released"
    assert client.get("/v1/balance", headers=sk, params={"customer_id": alice}).json()["balance"] == 10


def test_verify_and_charge_in_one_call(client: TestClient, tk: Tollkeep) -> None:
    sk = server_key(client)
    alice, alice_key = new_customer(client, "alice", credits=2)
    v = client.post("/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": None}).json()
    assert v == {"valid": True, "code": None, "customer_id": alice, "balance": 2, "charged": None}
    charge = {"meter": "api_call", "idempotency_key": "c1"}
    first = client.post("/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": charge}).json()
    again = client.post("/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": charge}).json()
    assert (first["valid"], first["charged"], first["balance"]) == (True, 1, 1)
    assert again["charge"]["duplicate"] is True and again["balance"] == 1
    client.post(
        "/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": {**charge, "idempotency_key": "c2"}}
    )
    broke = client.post(
        "/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": {**charge, "idempotency_key": "c3"}}
    ).json()
    assert (broke["valid"], broke["code"], broke["charged"], broke["balance"]) == (
        False,
        "insufficient_credits",
        0,
        0,
    )


def test_an_invalid_buyer_key_is_valid_false_not_a_401_and_charges_nothing(client: TestClient) -> None:
    sk = server_key(client)
    alice, alice_key = new_customer(client, "alice", credits=5)
    charge = {"meter": "api_call", "idempotency_key": "c1"}
    unknown = client.post(
        "/v1/keys/verify", headers=sk, json={"key": "tk_live_" + "x" * 43, "charge": charge}
    )
    assert unknown.status_code == 200 and unknown.json()["valid"] is False
    assert unknown.json()["code"] == "invalid_api_key"
    kid = client.get(f"/admin/customers/{alice}/keys").json()[0]["id"]
    client.post(f"/admin/keys/{kid}/revoke")
    revoked = client.post("/v1/keys/verify", headers=sk, json={"key": alice_key, "charge": charge}).json()
    assert (revoked["valid"], revoked["code"], revoked["charged"]) == (False, "key_revoked", 0)
    assert client.get("/v1/balance", headers=sk, params={"customer_id": alice}).json()["balance"] == 5


def test_only_server_keys_verify_and_scopes_hold(client: TestClient) -> None:
    _, alice_key = new_customer(client, "alice", credits=5)
    r = client.post("/v1/keys/verify", headers=bearer(alice_key), json={"key": alice_key})
    assert r.status_code == 403 and r.json()["error"]["code"] == "server_key_required"
    reader = server_key(client, "balance:read")
    r = client.post("/v1/keys/verify", headers=reader, json={"key": alice_key})
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    r = client.post(
        "/v1/usage", headers=reader, json={"meter": "api_call", "idempotency_key": "x", "customer_id": "c"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"


def test_a_revoked_server_key_stops_at_once(client: TestClient) -> None:
    made = client.post("/admin/server-keys", json={"name": "backend"}).json()
    alice, _ = new_customer(client, "alice", credits=5)
    sk = bearer(made["key"])
    assert client.get("/v1/balance", headers=sk, params={"customer_id": alice}).status_code == 200
    client.post(f"/admin/server-keys/{made['id']}/revoke")
    r = client.get("/v1/balance", headers=sk, params={"customer_id": alice})
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"


def test_buyer_key_default_scopes_come_from_the_catalog(tmp_path: Path, clock: FrozenClock) -> None:
    from tollkeep.catalog import BUYER_KEY_SCOPES, DEFAULT_CATALOG_TEXT
    from tollkeep.keys import ALL_SCOPES

    assert BUYER_KEY_SCOPES == ALL_SCOPES
    catalog = tmp_path / "tollkeep.toml"
    catalog.write_text(DEFAULT_CATALOG_TEXT + '\n[keys]\ndefault_scopes = ["balance:read", "usage:read"]\n')
    url = f"sqlite:///{tmp_path / 'scopes.db'}"
    with Tollkeep(make_settings(url, catalog_path=catalog), clock=clock) as tk:
        cid = tk.customers.create("alice")["id"]
        key = tk.keys.create(cid)
        assert key["scopes"] == ["balance:read", "usage:read"]
        wider = tk.keys.create(cid, scopes=["usage:write"], force_new=True)
        assert wider["scopes"] == ["usage:write"]
        with TestClient(create_app(runtime=tk)) as client:
            r = client.post(
                "/v1/usage", headers=bearer(key["key"]), json={"meter": "api_call", "idempotency_key": "u"}
            )
            assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    catalog.write_text(DEFAULT_CATALOG_TEXT + '\n[keys]\ndefault_scopes = ["admin"]\n')
    from tollkeep.catalog import CatalogError, load_catalog

    try:
        load_catalog(catalog)
    except CatalogError as exc:
        assert exc.details["issues"][0]["key"] == "keys.default_scopes"
    else:
        raise AssertionError("an unknown scope was accepted")


def test_an_unknown_server_key_is_an_invalid_api_key(client: TestClient) -> None:
    r = client.get("/v1/balance", headers=bearer("tk_sk_" + "x" * 43), params={"customer_id": "c"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
