"""Regression tests for the security findings of issue #5 that an in-process client can reproduce
(items 6, 8, 9, 11, 12, 17, 18). Each failed before its fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import ADMIN, bearer, make_settings
from tests.factories import anonymous_catalog, new_customer
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


@contextmanager
def serving(db_url: str, clock: FrozenClock, **settings: Any) -> Iterator[tuple[Tollkeep, TestClient]]:
    with (
        Tollkeep(make_settings(db_url, **settings), clock=clock) as tk,
        TestClient(create_app(runtime=tk)) as client,
    ):
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        yield tk, client
        report = tk.verify()
        assert report.ok, report.problems


def anon_headers(install_id: str) -> dict[str, str]:
    return {"X-Install-Id": install_id, "Authorization": ""}


def strip_auth(client: TestClient) -> TestClient:
    """A client on the same app without the admin token."""
    return TestClient(client.app)


# ---- 6: GET /v1/usage is strictly newest first, stable across pages ---------------------------------
def test_usage_listing_is_newest_first_with_settled_holds(
    client: TestClient, tk: Tollkeep, clock: FrozenClock
) -> None:
    _, key = new_customer(client, credits=100)
    h = bearer(key)
    hold = client.post("/v1/holds", headers=h, json={"amount": 5, "idempotency_key": "h"}).json()
    clock.advance(timedelta(seconds=1))
    settled = client.post(f"/v1/holds/{hold['id']}/settle", headers=h, json={"amount": 3}).json()
    clock.advance(timedelta(seconds=1))
    later = client.post("/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "u"}).json()
    listed = client.get("/v1/usage", headers=h).json()["data"]
    # the usage event came after the settlement: it is listed first
    assert [e["event_id"] for e in listed] == [later["event_id"], settled["operation_id"]]
    assert listed[1]["hold_id"] == hold["id"]


def test_usage_pages_follow_one_total_order(client: TestClient, tk: Tollkeep, clock: FrozenClock) -> None:
    cid, key = new_customer(client, credits=100)
    h = bearer(key)
    # many events in the same instant (the clock is frozen), some settled holds among them
    for i in range(7):
        assert client.post(
            "/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": f"a{i}"}
        ).is_success
        if i % 3 == 0:
            hid = client.post("/v1/holds", headers=h, json={"amount": 1, "idempotency_key": f"h{i}"}).json()
            assert client.post(f"/v1/holds/{hid['id']}/settle", headers=h, json={"amount": 1}).is_success
        if i % 2:
            clock.advance(timedelta(milliseconds=1))
    everything = client.get("/v1/usage", headers=h, params={"limit": 500}).json()["data"]
    assert len(everything) == 10
    order = [(e["created_at"], e["event_id"]) for e in everything]
    assert order == sorted(order, key=lambda p: (tk_time(p[0]), p[1]), reverse=True)
    assert len(set(order)) == len(order)
    for size in (1, 3, 4):
        for path in ("/v1/usage", f"/admin/customers/{cid}/usage"):
            seen: list[str] = []
            after = None
            while True:
                params: dict[str, Any] = {"limit": size}
                if after:
                    params["after"] = after
                page = client.get(path, headers=h if path.startswith("/v1") else None, params=params).json()
                seen += [e["event_id"] for e in page["data"]]
                after = page["next"]
                if not after:
                    break
            assert seen == [e["event_id"] for e in everything], (path, size)
    bad = client.get("/v1/usage", headers=h, params={"after": "not-a-cursor"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_cursor"


def tk_time(iso_text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(iso_text)


# ---- 8: bounded properties, byte-bounded pages, rate-limited writes ----------------------------------
def test_properties_are_bounded(client: TestClient) -> None:
    _, key = new_customer(client, credits=100)
    h = bearer(key)
    big = {"blob": "x" * 5000}
    many = {f"k{i}": i for i in range(65)}
    for props in (big, many):
        r = client.post(
            "/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "p", "properties": props}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "properties_too_large", r.text
        r = client.post(
            "/v1/holds", headers=h, json={"amount": 1, "idempotency_key": "hp", "properties": props}
        )
        assert r.status_code == 422 and r.json()["error"]["code"] == "properties_too_large", r.text
    hold = client.post("/v1/holds", headers=h, json={"amount": 1, "idempotency_key": "ok"}).json()
    r = client.post(f"/v1/holds/{hold['id']}/settle", headers=h, json={"amount": 1, "properties": big})
    assert r.status_code == 422 and r.json()["error"]["code"] == "properties_too_large"
    fits = {"note": "y" * 3000, "n": 1}
    ok = client.post(
        "/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "fits", "properties": fits}
    )
    assert ok.status_code == 200, ok.text
    assert client.get("/v1/balance", headers=h).json()["balance"] == 98  # 1 usage + 1 open hold


def test_list_pages_are_bounded_in_bytes(db_url: str, clock: FrozenClock) -> None:
    with serving(db_url, clock, list_max_bytes=3000) as (_tk, client):
        cid, key = new_customer(client, credits=100)
        h = bearer(key)
        for i in range(10):
            body = {"meter": "api_call", "idempotency_key": f"b{i}", "properties": {"pad": "z" * 1000}}
            assert client.post("/v1/usage", headers=h, json=body).status_code == 200
        for path, headers in (("/v1/usage", h), (f"/admin/customers/{cid}/usage", None)):
            first = client.get(path, headers=headers, params={"limit": 500})
            page = first.json()
            assert 1 <= len(page["data"]) < 10 and page["has_more"] and page["next"]
            assert len(first.content) < 3000 + 2000  # the budget, plus at most one row past it
            seen = [e["event_id"] for e in page["data"]]
            while page["next"]:
                page = client.get(path, headers=headers, params={"limit": 500, "after": page["next"]}).json()
                seen += [e["event_id"] for e in page["data"]]
            assert len(seen) == len(set(seen)) == 10


def test_writes_are_rate_limited_per_customer_even_when_free(db_url: str, clock: FrozenClock) -> None:
    with serving(db_url, clock, rate_limit_usage="4/minute") as (_tk, client):
        _, key = new_customer(client)  # no credits at all: only zero-priced events succeed
        _, other = new_customer(client, ext="other", credits=10)
        h = bearer(key)
        for i in range(3):  # the first 100 pages of a period are free
            r = client.post("/v1/usage", headers=h, json={"meter": "pages", "idempotency_key": f"f{i}"})
            assert r.status_code == 200 and r.json()["charged"] == 0, r.text
        r = client.post("/v1/holds", headers=h, json={"amount": 0, "idempotency_key": "h0"})
        assert r.status_code == 201, r.text
        for attempt in (
            client.post("/v1/usage", headers=h, json={"meter": "pages", "idempotency_key": "f9"}),
            client.post("/v1/holds", headers=h, json={"amount": 0, "idempotency_key": "h1"}),
            client.post(f"/v1/holds/{r.json()['id']}/release", headers=h),
        ):
            assert attempt.status_code == 429, attempt.text
            assert attempt.json()["error"]["code"] == "rate_limited"
            assert int(attempt.headers["Retry-After"]) >= 1
        # another customer is not affected, and reads are not limited
        assert client.post(
            "/v1/usage", headers=bearer(other), json={"meter": "api_call", "idempotency_key": "x"}
        ).is_success
        assert client.get("/v1/usage", headers=h).status_code == 200


def test_rate_limit_can_be_switched_off(db_url: str, clock: FrozenClock) -> None:
    with serving(db_url, clock, rate_limit_usage="off") as (_tk, client):
        _, key = new_customer(client, credits=200)
        for i in range(150):
            r = client.post(
                "/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": str(i)}
            )
            assert r.status_code == 200


def test_rate_limit_setting_is_validated() -> None:
    from pydantic import ValidationError

    from tollkeep.config import Settings

    with pytest.raises(ValidationError):
        Settings(rate_limit_usage="lots")
    assert Settings().rate_limit_usage == "100/second"


# ---- 9: anonymous use is off by default; new install ids are limited per address ---------------------
def test_anonymous_use_is_off_by_default(client: TestClient, tk: Tollkeep) -> None:
    assert tk.catalog.anonymous.allowance == 0
    with strip_auth(client) as anon:
        r = anon.post(
            "/v1/usage",
            headers={"X-Install-Id": "fresh-install-1"},
            json={"meter": "api_call", "idempotency_key": "free"},
        )
        assert r.status_code == 401 and r.json()["error"]["code"] == "anonymous_disabled"
    assert tk.customers.list(include_anonymous=True)["data"] == []


def test_new_install_ids_are_limited_per_address(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    with serving(
        db_url, clock, catalog_path=anonymous_catalog(tmp_path, 3), install_ids_per_ip_per_hour=2
    ) as (tk, client):
        with strip_auth(client) as anon:
            for n in (1, 2):
                r = anon.get("/v1/balance", headers={"X-Install-Id": f"install-{n:04d}"})
                assert r.status_code == 200 and r.json()["balance"] == 3
            r = anon.get("/v1/balance", headers={"X-Install-Id": "install-0003"})
            assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
            assert int(r.headers["Retry-After"]) >= 1
            # known ids keep working
            assert anon.get("/v1/balance", headers={"X-Install-Id": "install-0001"}).status_code == 200
        assert len(tk.customers.list(include_anonymous=True)["data"]) == 2


# ---- 11: lone surrogates are refused at input; a failure never commits -----------------------------
SURROGATE = '"\\ud800"'  # JSON text for a lone surrogate


def test_lone_surrogates_are_refused_everywhere(client: TestClient, tk: Tollkeep) -> None:
    cid, key = new_customer(client, credits=20)
    h = {**bearer(key), "content-type": "application/json"}
    admin = {"content-type": "application/json"}
    hold = client.post("/v1/holds", headers=bearer(key), json={"amount": 2, "idempotency_key": "ok"}).json()
    kid = client.get(f"/admin/customers/{cid}/keys").json()[0]["id"]
    cases = [
        (
            "POST",
            "/v1/usage",
            h,
            f'{{"meter": "api_call", "idempotency_key": "s", "properties": {{"x": {SURROGATE}}}}}',
        ),
        (
            "POST",
            "/v1/holds",
            h,
            f'{{"amount": 1, "idempotency_key": "s", "properties": {{"x": {SURROGATE}}}}}',
        ),
        (
            "POST",
            "/v1/holds",
            h,
            f'{{"amount": 1, "idempotency_key": "s", "properties": {{{SURROGATE}: 1}}}}',
        ),
        (
            "POST",
            f"/v1/holds/{hold['id']}/settle",
            h,
            f'{{"amount": 1, "properties": {{"x": [{SURROGATE}]}}}}',
        ),
        ("POST", "/admin/customers", admin, f'{{"external_id": "sur", "metadata": {{"x": {SURROGATE}}}}}'),
        ("POST", "/admin/customers", admin, f'{{"external_id": {SURROGATE}}}'),
        ("PATCH", f"/admin/customers/{cid}", admin, f'{{"metadata": {{"x": {SURROGATE}}}}}'),
        ("PATCH", f"/admin/customers/{cid}", admin, f'{{"name": {SURROGATE}}}'),
        ("PATCH", f"/admin/keys/{kid}", admin, f'{{"note": {SURROGATE}}}'),
        ("POST", f"/admin/customers/{cid}/keys", admin, f'{{"name": {SURROGATE}, "force_new": true}}'),
        (
            "POST",
            f"/admin/customers/{cid}/grants",
            admin,
            f'{{"amount": 1, "idempotency_key": "g", "note": {SURROGATE}}}',
        ),
    ]
    for method, path, headers, body in cases:
        r = client.request(method, path, headers=headers, content=body.encode())
        assert r.status_code == 422, (path, body, r.status_code, r.text)
        assert r.json()["error"]["code"], r.text
    # nothing was stored, and every listing still renders
    assert client.get("/admin/customers/sur").status_code == 404
    assert client.get("/admin/customers", params={"include_anonymous": True}).status_code == 200
    assert client.get("/v1/usage", headers=bearer(key)).status_code == 200
    assert client.get(f"/admin/customers/{cid}/usage").status_code == 200
    assert client.get("/admin/keys").status_code == 200
    assert client.get("/v1/balance", headers=bearer(key)).json()["balance"] == 18
    # the services refuse them too (CLI, embedding code)
    from tollkeep.kit.errors import InvalidInput

    with pytest.raises(InvalidInput):
        tk.customers.create("sur2", metadata={"x": "\ud800"})
    with pytest.raises(InvalidInput):
        tk.keys.create(cid, note="\udfff", force_new=True)


def test_a_failed_customer_create_commits_nothing(
    client: TestClient, tk: Tollkeep, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tollkeep.customers.service as customers

    def broken_view(row: Any) -> dict[str, Any]:
        raise RuntimeError("rendering failed")

    monkeypatch.setattr(customers, "customer_view", broken_view)
    with TestClient(client.app, raise_server_exceptions=False) as c:
        r = c.post(
            "/admin/customers",
            json={"external_id": "half-made"},
            headers={"Authorization": f"Bearer {ADMIN}"},
        )
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal_error"
    monkeypatch.undo()
    assert client.get("/admin/customers/half-made").status_code == 404
    # and a retry succeeds instead of answering customer_exists
    assert client.post("/admin/customers", json={"external_id": "half-made"}).status_code == 201


# ---- 12: X-Install-Id reaches anonymous customers only; `install:` is reserved -----------------------
def test_install_prefix_is_reserved(client: TestClient) -> None:
    for ext in ("install:abcdefgh12", "INSTALL:abcdefgh12", "Install:x"):
        r = client.post("/admin/customers", json={"external_id": ext})
        assert r.status_code == 422 and r.json()["error"]["code"] == "reserved_external_id", r.text
    assert client.post("/admin/customers", json={"external_id": "installer"}).status_code == 201


def test_install_id_cannot_spend_a_named_customer(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    with serving(db_url, clock, catalog_path=anonymous_catalog(tmp_path)) as (tk, client):
        cid, _ = new_customer(client, ext="paying", credits=500)
        # a customer made before the prefix was reserved (or by hand in the database)
        tk.executor.call(
            lambda s: s.execute(
                text("UPDATE customers SET external_id = 'install:victim-0001' WHERE id = :id"), {"id": cid}
            )
        )
        with strip_auth(client) as anon:
            h = {"X-Install-Id": "victim-0001"}
            r = anon.post("/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "steal"})
            assert r.status_code == 401 and r.json()["error"]["code"] == "install_id_unavailable", r.text
            assert anon.get("/v1/balance", headers=h).status_code == 401
            # a genuinely anonymous id still works
            assert anon.get("/v1/balance", headers={"X-Install-Id": "someone-new"}).json()["balance"] == 10
        assert tk.balance(cid)["balance"] == 500


def test_anonymous_install_id_when_turned_on(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    with serving(db_url, clock, catalog_path=anonymous_catalog(tmp_path, 2)) as (tk, _client):
        cust = tk.customers.install_customer("install-abcdef123")
        assert tk.customers.get(cust)["anonymous"] is True
        assert tk.customers.install_customer("install-abcdef123") == cust


# ---- 17: admin grants need an idempotency key ------------------------------------------------------
def test_admin_grant_requires_an_idempotency_key(client: TestClient, tk: Tollkeep) -> None:
    cid, _ = new_customer(client)
    for body in ({"amount": 10}, {"amount": 10, "idempotency_key": None}):
        r = client.post(f"/admin/customers/{cid}/grants", json=body)
        assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_idempotency_key", r.text
    assert tk.balance(cid)["balance"] == 0
    spec = client.get("/openapi.json").json()["components"]["schemas"]["GrantIn"]
    assert "idempotency_key" in spec["required"]
    body = {"amount": 10, "idempotency_key": "pay-1"}
    assert client.post(f"/admin/customers/{cid}/grants", json=body).status_code == 201
    assert client.post(f"/admin/customers/{cid}/grants", json=body).status_code == 200
    assert tk.balance(cid)["balance"] == 10


# ---- 18: no redirect built from the Host header ----------------------------------------------------
def test_trailing_slash_is_a_404_not_a_redirect(client: TestClient) -> None:
    _, key = new_customer(client, credits=5)
    h = {**bearer(key), "Host": "evil.example"}
    for method, path in (("POST", "/v1/usage/"), ("GET", "/v1/balance/"), ("GET", "/admin/customers/")):
        r = client.request(
            method,
            path,
            headers=h if path.startswith("/v1") else {"Host": "evil.example"},
            json={"meter": "api_call", "idempotency_key": "slash"} if method == "POST" else None,
            follow_redirects=False,
        )
        assert r.status_code == 404, (path, r.status_code, r.headers)
        assert "location" not in r.headers
        assert r.json()["error"]["code"] == "not_found"
    assert client.get("/v1/balance", headers=bearer(key)).json()["balance"] == 5
