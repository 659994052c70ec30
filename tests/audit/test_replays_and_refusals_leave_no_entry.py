"""An admin call that changes nothing leaves no audit entry: a replay of an idempotent grant or
refund (same key), and every refused call (404, 409, 422, a read-only token's 403)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient

from tests.conftest import bearer


def test_replayed_grants_and_refunds_write_nothing(
    client: TestClient, last_id: Callable[[], int | None], charged: Callable[[str], tuple[str, str, str]]
) -> None:
    cid, _, event = charged("replay")
    body = {"amount": 7, "idempotency_key": "g-once"}
    assert client.post(f"/admin/customers/{cid}/grants", json=body).status_code == 201
    refund = {"idempotency_key": "r-once"}
    assert client.post(f"/admin/charges/{event}/refund", json=refund).status_code == 201
    newest = last_id()
    again = client.post(f"/admin/customers/{cid}/grants", json=body)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    again = client.post(f"/admin/charges/{event}/refund", json=refund)
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert last_id() == newest


def test_refused_admin_calls_write_nothing(
    client: TestClient, last_id: Callable[[], int | None], charged: Callable[[str], tuple[str, str, str]]
) -> None:
    cid, _, event = charged("refused")
    kid = client.post(f"/admin/customers/{cid}/keys", json={"force_new": True}).json()["id"]
    assert client.post(f"/admin/keys/{kid}/revoke").status_code == 200
    ro = client.post("/admin/admin-tokens", json={"name": "dash", "role": "read_only"}).json()["key"]
    newest = last_id()
    refused = [
        # same key, another request: 409 idempotency_conflict
        (
            client.post(
                f"/admin/customers/{cid}/grants", json={"amount": 99, "idempotency_key": "g-refused"}
            ),
            409,
        ),
        (client.post(f"/admin/customers/{cid}/grants", json={"amount": 5}), 422),  # no idempotency key
        (
            client.post(
                f"/admin/customers/{cid}/grants",
                json={"amount": 5, "idempotency_key": "m", "meter": "no_such_meter"},
            ),
            422,
        ),
        (client.post("/admin/customers/cus_nobody/grants", json={"amount": 5, "idempotency_key": "x"}), 404),
        (client.post(f"/admin/charges/{event}/refund", json={"idempotency_key": "big", "amount": 2}), 409),
        (client.post("/admin/charges/evt_nothing/refund", json={"idempotency_key": "n"}), 404),
        (client.post("/admin/customers/cus_nobody/overdraft", json={"limit": 5}), 404),
        (client.post(f"/admin/customers/{cid}/overdraft", json={"limit": -1}), 422),
        (client.post(f"/admin/keys/{kid}/resume"), 409),  # a revoked key stays revoked
        (client.post(f"/admin/keys/{kid}/rotate"), 409),
        (client.post("/admin/keys/key_nothing/suspend"), 404),
        (client.patch(f"/admin/keys/{kid}", json={"ip_allowlist": ["not an address"]}), 422),
        (client.post("/admin/customers/cus_nobody/keys"), 404),
        (client.post("/admin/catalog/reload"), 409),  # not loaded from a file
        (
            client.post(
                f"/admin/customers/{cid}/grants",
                headers=bearer(ro),
                json={"amount": 5, "idempotency_key": "ro"},
            ),
            403,
        ),
        (client.post("/admin/sweep", headers=bearer(ro)), 403),
    ]
    for r, status in refused:
        assert r.status_code == status, (r.request.url, r.text)
    assert last_id() == newest


def test_a_customer_update_that_changes_nothing_leaves_no_entry(client: TestClient) -> None:
    cid = client.post("/admin/customers", json={"external_id": "same", "email": "a@example.com"}).json()["id"]
    client.patch(f"/admin/customers/{cid}", json={"email": "a@example.com"})
    actions = [e["action"] for e in client.get("/admin/audit").json()["data"]]
    assert actions.count("customer.update") == 0 and actions.count("customer.create") == 1
    client.patch(f"/admin/customers/{cid}", json={"email": "b@example.com"})
    assert client.get("/admin/audit").json()["data"][0]["action"] == "customer.update"
