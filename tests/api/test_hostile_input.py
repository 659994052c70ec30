"""Inputs that used to reach the database and fail there (found in review): each must be a
4xx JSON error on SQLite and PostgreSQL alike, and change nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import new_customer


def assert_4xx(r: object, code: str | None = None) -> None:
    status = r.status_code  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert 400 <= status < 500, (status, body)
    assert isinstance(body["error"]["code"], str)
    if code:
        assert body["error"]["code"] == code, body


def test_non_finite_numbers_and_nul_are_refused(client: TestClient) -> None:
    cid, key = new_customer(client, credits=5)
    h = {**bearer(key), "content-type": "application/json"}
    nan_prop = b'{"meter": "api_call", "idempotency_key": "n", "properties": {"x": NaN}}'
    assert_4xx(client.post("/v1/usage", headers=h, content=nan_prop))
    inf_prop = b'{"meter": "api_call", "idempotency_key": "n", "properties": {"x": [1, Infinity]}}'
    assert_4xx(client.post("/v1/usage", headers=h, content=inf_prop))
    assert_4xx(
        client.post("/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "a\x00b"})
    )
    assert_4xx(
        client.post(
            "/v1/holds", headers=h, content=b'{"amount": 1, "idempotency_key": "h", "properties": {"x": NaN}}'
        )
    )
    assert_4xx(
        client.post(
            "/admin/customers",
            headers={"content-type": "application/json"},
            content=b'{"external_id": "nan-meta", "metadata": {"x": NaN}}',
        )
    )
    assert_4xx(client.post("/admin/customers", json={"external_id": "nul\x00id"}))
    assert_4xx(client.patch(f"/admin/customers/{cid}", json={"name": "a\x00"}))
    deep: dict[str, object] = {}
    node = deep
    for _ in range(40):
        node["x"] = {}
        node = node["x"]  # type: ignore[assignment]
    assert_4xx(
        client.post(
            "/v1/usage",
            headers=bearer(key),
            json={"meter": "api_call", "idempotency_key": "d", "properties": deep},
        )
    )
    assert client.get("/v1/balance", headers=bearer(key)).json()["balance"] == 5


def test_oversized_integers_are_refused(client: TestClient) -> None:
    cid, _ = new_customer(client)
    assert_4xx(client.post(f"/admin/customers/{cid}/overdraft", json={"limit": 10**19}))
    assert_4xx(client.get(f"/admin/customers/{cid}/ledger", params={"after": 10**19}))
    assert_4xx(client.post(f"/admin/customers/{cid}/grants", json={"amount": 10**19, "idempotency_key": "g"}))


def test_empty_plan_and_unknown_grant_meter_are_refused(client: TestClient) -> None:
    cid, _ = new_customer(client)
    assert_4xx(client.post(f"/admin/customers/{cid}/plan", json={"plan": ""}))
    assert_4xx(client.post(f"/admin/customers/{cid}/plan", json={"plan": "no-such-plan"}), "unknown_plan")
    r = client.post(
        f"/admin/customers/{cid}/grants", json={"amount": 5, "meter": "no_such_meter", "idempotency_key": "g"}
    )
    assert_4xx(r, "unknown_meter")
    assert client.post(f"/admin/customers/{cid}/plan", json={"plan": None}).status_code == 200


def test_chunked_body_over_limit_is_413_on_every_route(client: TestClient) -> None:
    _, key = new_customer(client, credits=1)

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"amount": 1, "idempotency_key": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    for path in ("/v1/holds", "/v1/usage"):
        r = client.post(path, headers={**bearer(key), "content-type": "application/json"}, content=chunks())
        assert_4xx(r, "body_too_large")
        assert r.status_code == 413


def test_nul_in_urls_is_a_400(client: TestClient) -> None:
    _, key = new_customer(client, credits=1)
    admin_paths = [
        ("GET", "/admin/customers/%00"),
        ("POST", "/admin/keys/%00/revoke"),
        ("POST", "/admin/charges/%00/refund"),
        ("GET", "/admin/customers/%00/ledger"),
        ("GET", "/admin/customers?q=%00"),
        ("POST", "/admin/customers/%00/grants"),
    ]
    public_paths = [
        ("GET", "/v1/holds/%00"),
        ("POST", "/v1/holds/%00/release"),
        ("GET", "/v1/usage?after=%00"),
    ]
    for method, path in admin_paths + public_paths:
        headers = bearer(key) if path.startswith("/v1") else {}
        body = {"idempotency_key": "x", "amount": 1} if method == "POST" else None
        assert_4xx(client.request(method, path, headers=headers, json=body), "invalid_text")
