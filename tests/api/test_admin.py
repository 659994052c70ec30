"""Admin routes beyond the basic contract: customers, plans, refunds, catalog reload, anonymous ids."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import ADMIN, bearer, make_settings
from tests.factories import anonymous_catalog, new_customer
from tollkeep.app import create_app
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def test_customer_crud_and_duplicates(client: TestClient) -> None:
    r = client.post(
        "/admin/customers", json={"external_id": "acme", "email": "ops@acme.test", "metadata": {"a": 1}}
    )
    assert r.status_code == 201
    cid = r.json()["id"]
    dup = client.post("/admin/customers", json={"external_id": "acme"})
    assert dup.status_code == 409 and dup.json()["error"]["customer_id"] == cid
    assert client.get("/admin/customers/acme").json()["id"] == cid
    assert client.get("/admin/customers", params={"q": "acme"}).json()["data"][0]["id"] == cid
    bad = client.post("/admin/customers", json={"external_id": "x", "email": "not-an-email"})
    assert bad.status_code == 422
    assert client.get("/admin/customers/cus_nope").status_code == 404


def test_grant_idempotency_over_http(client: TestClient) -> None:
    cid, _ = new_customer(client)
    body = {"amount": 10, "source": "purchase", "expires_at": None, "idempotency_key": "pay-1"}
    first = client.post(f"/admin/customers/{cid}/grants", json=body)
    again = client.post(f"/admin/customers/{cid}/grants", json=body)
    assert first.status_code == 201 and again.status_code == 200 and again.json()["duplicate"]
    assert again.json()["id"] == first.json()["id"]
    clash = client.post(f"/admin/customers/{cid}/grants", json={**body, "amount": 11})
    assert clash.status_code == 409
    assert client.get(f"/admin/customers/{cid}/balance").json()["balance"] == 10


def test_refund_over_http(client: TestClient) -> None:
    cid, key = new_customer(client, credits=5)
    ev = client.post(
        "/v1/usage", headers=bearer(key), json={"meter": "search", "quantity": 2, "idempotency_key": "s"}
    )
    assert ev.status_code == 200, ev.text
    charged = ev.json()["charged"]
    eid = ev.json()["event_id"]
    r = client.post(f"/admin/charges/{eid}/refund", json={"idempotency_key": "r1", "reason": "bad result"})
    assert r.status_code == 201 and r.json()["amount"] == charged
    assert (
        client.post(
            f"/admin/charges/{eid}/refund", json={"idempotency_key": "r1", "reason": "bad result"}
        ).status_code
        == 200
    )
    assert client.post(f"/admin/charges/{eid}/refund", json={"idempotency_key": "r2"}).status_code == 409
    assert client.get(f"/admin/customers/{cid}/balance").json()["balance"] == 5
    assert client.get("/admin/ledger/verify").json()["ok"] is True


def test_catalog_reload_keeps_old_on_error(tmp_path: Path, db_url: str, clock: FrozenClock) -> None:
    path = tmp_path / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT)
    with (
        Tollkeep(make_settings(db_url, catalog_path=path), clock=clock) as tk,
        TestClient(create_app(runtime=tk)) as client,
    ):
        client.headers["Authorization"] = f"Bearer {ADMIN}"
        v1 = client.get("/admin/catalog").json()["version"]
        path.write_text("this is = = not toml")
        bad = client.post("/admin/catalog/reload")
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_catalog"
        assert client.get("/admin/catalog").json()["version"] == v1
        path.write_text(DEFAULT_CATALOG_TEXT.replace('version = "2026-01-01"', 'version = "2026-02-01"'))
        ok = client.post("/admin/catalog/reload")
        assert (
            ok.status_code == 200 and ok.json()["changed"] and ok.json()["version"].startswith("2026-02-01")
        )
        _, key = new_customer(client, credits=2)
        ev = client.post(
            "/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "v"}
        ).json()
        assert ev["catalog_version"] == ok.json()["version"]
        assert tk.verify().ok


def test_anonymous_install_id(db_url: str, clock: FrozenClock, tmp_path: Path) -> None:
    # anonymous use is off by default: this seller turns it on in the catalog
    with (
        Tollkeep(make_settings(db_url, catalog_path=anonymous_catalog(tmp_path, 10)), clock=clock) as tk,
        TestClient(create_app(runtime=tk)) as anon,
    ):
        free = tk.catalog.anonymous.allowance
        assert free == 10
        h = {"X-Install-Id": "install-abcdef123"}
        bal = anon.get("/v1/balance", headers=h)
        assert bal.status_code == 200 and bal.json()["balance"] == free
        for i in range(free):
            assert (
                anon.post(
                    "/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": f"i{i}"}
                ).status_code
                == 200
            )
        r = anon.post("/v1/usage", headers=h, json={"meter": "api_call", "idempotency_key": "over"})
        assert r.status_code == 402
        assert anon.get("/v1/balance", headers={"X-Install-Id": "bad id!"}).status_code == 422
        assert anon.get("/v1/balance").status_code == 401
        assert tk.verify().ok


def test_admin_token_required(client: TestClient) -> None:
    anon = TestClient(client.app)
    with anon:
        r = anon.get("/admin/customers")
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token"
        r = anon.get("/admin/customers", headers={"Authorization": "Basic abc"})
        assert r.status_code == 401


def test_customer_with_plan_is_made_in_one_transaction(client: TestClient, tk: Tollkeep) -> None:
    r = client.post("/admin/customers", json={"external_id": "on-free", "plan": "free"})
    assert r.status_code == 201 and r.json()["plan"] == "free"
    cid = r.json()["id"]
    ops = {o.kind for o in tk.executor.call(lambda s: list(s.execute(text("SELECT kind FROM operations"))))}
    assert {"plan_change", "allowance"} <= ops
    assert tk.balance(cid)["balance"] == tk.catalog.plans["free"].allowance.amount  # type: ignore[union-attr]
    bad = client.post("/admin/customers", json={"external_id": "on-nothing", "plan": "nope"})
    assert bad.status_code == 422
    assert client.get("/admin/customers/on-nothing").status_code == 404
