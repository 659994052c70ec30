"""The HTTP contract of issue #2, end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import new_customer


def test_healthz(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}


def test_usage_happy_path_and_idempotency(client: TestClient) -> None:
    cid, key = new_customer(client, credits=3)
    h = bearer(key)
    r = client.get("/v1/balance", headers=h)
    assert r.status_code == 200 and r.json()["balance"] == 3 and r.json()["unit"] == "credit"
    r = client.post("/v1/usage", headers=h, json={"meter": "api_call", "quantity": 1, "idempotency_key": "a"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["charged"] == 1 and body["balance"] == 2 and body["duplicate"] is False and body["event_id"]
    again = client.post(
        "/v1/usage", headers=h, json={"meter": "api_call", "quantity": 1, "idempotency_key": "a"}
    )
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert again.json()["event_id"] == body["event_id"] and again.json()["balance"] == 2
    clash = client.post(
        "/v1/usage", headers=h, json={"meter": "api_call", "quantity": 2, "idempotency_key": "a"}
    )
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_conflict"
    for i in range(2):
        assert (
            client.post(
                "/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": f"b{i}"}
            ).status_code
            == 200
        )
    broke = client.post("/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "c"})
    assert broke.status_code == 402 and broke.json()["error"]["code"] == "insufficient_credits"
    assert client.get("/v1/balance", headers=h).json()["balance"] == 0
    events = client.get("/v1/usage", headers=h).json()
    assert len(events["data"]) == 3
    journal = client.get(f"/admin/customers/{cid}/ledger").json()
    assert [e["delta"] for e in journal["data"]] == [3, -1, -1, -1]


def test_holds(client: TestClient) -> None:
    _, key = new_customer(client, credits=10)
    h = bearer(key)
    r = client.post("/v1/holds", headers=h, json={"amount": 6, "ttl_seconds": 60, "idempotency_key": "h1"})
    assert r.status_code == 201, r.text
    hid = r.json()["id"]
    assert r.json()["amount"] == 6 and r.json()["balance"] == 4
    s = client.post(f"/v1/holds/{hid}/settle", headers=h, json={"amount": 4})
    assert s.status_code == 200 and s.json()["balance"] == 6, s.text
    assert client.post(f"/v1/holds/{hid}/settle", headers=h, json={"amount": 4}).json()["duplicate"] is True
    assert client.post(f"/v1/holds/{hid}/settle", headers=h, json={"amount": 5}).status_code == 409
    assert client.post(f"/v1/holds/{hid}/release", headers=h).status_code == 409
    r = client.post(
        "/v1/holds", headers=h, json={"meter": "api_call", "quantity": 3, "idempotency_key": "h2"}
    )
    assert r.status_code == 201 and r.json()["amount"] == 3
    rel = client.post(f"/v1/holds/{r.json()['id']}/release", headers=h)
    assert rel.status_code == 200 and rel.json()["balance"] == 6


def test_auth_failures(client: TestClient) -> None:
    cid, key = new_customer(client, credits=1)
    assert client.get("/v1/balance", headers=bearer("tk_live_nope")).status_code == 401
    assert client.get("/v1/balance", headers={"Authorization": ""}).status_code == 401
    kid = client.get(f"/admin/customers/{cid}/keys").json()[0]["id"]
    assert client.post(f"/admin/keys/{kid}/revoke").status_code == 200
    r = client.get("/v1/balance", headers=bearer(key))
    assert r.status_code == 401 and r.json()["error"]["code"] == "key_revoked"
    assert (
        client.post("/admin/customers", headers=bearer("wrong"), json={"external_id": "x"}).status_code == 401
    )


def test_bad_input_is_4xx_json(client: TestClient) -> None:
    _, key = new_customer(client, credits=1)
    h = bearer(key)
    cases = [
        client.post("/v1/usage", headers={**h, "content-type": "application/json"}, content=b"{nope"),
        client.post("/v1/usage", headers=h, json={"meter": "api_call"}),
        client.post("/v1/usage", headers=h, json={"meter": "nope", "idempotency_key": "x"}),
        client.post(
            "/v1/usage", headers=h, json={"meter": "api_call", "quantity": -1, "idempotency_key": "x"}
        ),
        client.post(
            "/v1/usage", headers=h, json={"meter": "api_call", "quantity": "NaN", "idempotency_key": "x"}
        ),
        client.post("/v1/usage", headers=h, json=[1, 2]),
        client.post("/v1/usage", headers=h, content=b"x" * 100_000),
        client.post("/admin/customers/nope/grants", json={"amount": 1.5}),
        client.post("/admin/customers/nope/grants", json={"amount": 5}),
        client.get("/nowhere"),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert r.json()["error"]["code"], r.text
    assert client.get("/v1/balance", headers=h).json()["balance"] == 1


def test_pricing_and_openapi(client: TestClient) -> None:
    p = client.get("/v1/pricing").json()
    assert p["credits"]["unit"] == "credit"
    assert any(m["key"] == "api_call" for m in p["meters"])
    spec = client.get("/openapi.json").json()
    assert "/v1/usage" in spec["paths"] and "/admin/customers" in spec["paths"]


def test_chunked_body_over_limit_is_413(client: TestClient) -> None:
    _, key = new_customer(client, credits=1)

    def chunks():  # type: ignore[no-untyped-def]
        for _ in range(100):
            yield b"x" * 1024

    r = client.post(
        "/v1/usage", headers={**bearer(key), "content-type": "application/json"}, content=chunks()
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_get_hold(client: TestClient) -> None:
    _, key = new_customer(client, credits=5)
    _, other_key = new_customer(client, ext="someone-else", credits=5)
    h = client.post("/v1/holds", headers=bearer(key), json={"amount": 2, "idempotency_key": "gh"}).json()
    got = client.get(f"/v1/holds/{h['id']}", headers=bearer(key))
    assert got.status_code == 200 and got.json()["status"] == "open" and got.json()["amount"] == 2
    assert client.get(f"/v1/holds/{h['id']}", headers=bearer(other_key)).status_code == 404
    client.post(f"/v1/holds/{h['id']}/release", headers=bearer(key))
    assert client.get(f"/v1/holds/{h['id']}", headers=bearer(key)).json()["status"] == "released"
