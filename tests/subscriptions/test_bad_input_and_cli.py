"""Bad input gets a 4xx JSON error with a stable code (never a 5xx); the test clock is refused
when it is off; the CLI's subscriptions and invoices groups."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import cli, new_customer
from tollkeep.runtime import Tollkeep


def code(r: object) -> tuple[int, str]:
    resp = r  # httpx.Response
    return resp.status_code, resp.json()["error"]["code"]  # type: ignore[attr-defined]


def test_bad_input_is_a_4xx_with_a_code(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    cid, _ = new_customer(c, "b1")
    post = lambda body: c.post("/admin/subscriptions", json=body)  # noqa: E731
    assert code(post({"customer_id": cid, "plan": "gold"})) == (422, "unknown_plan")
    assert code(post({"customer_id": cid, "plan": "free"})) == (422, "plan_not_billable")
    assert code(post({"customer_id": "cus_nope", "plan": "pro"})) == (404, "customer_not_found")
    assert code(post({"customer_id": cid, "plan": "pro", "provider": "stripe"})) == (
        422,
        "unsupported_provider",
    )
    assert code(post({"customer_id": cid, "plan": "pro", "currency": "jpy"})) == (422, "unsupported_currency")
    assert post({"customer_id": cid, "plan": "pro", "extra": 1}).status_code == 422
    assert post({"customer_id": cid}).status_code == 422
    assert post({"customer_id": cid, "plan": ""}).status_code == 422
    sub = post({"customer_id": cid, "plan": "pro", "provider": "manual"})
    assert sub.status_code == 201 and set(sub.json()) >= {"id", "status", "current_period_end"}
    sid = sub.json()["id"]
    assert code(post({"customer_id": cid, "plan": "pro"})) == (409, "subscription_exists")
    assert code(c.get("/admin/subscriptions/sub_nope")) == (404, "subscription_not_found")
    assert code(c.get("/admin/subscriptions/sub_nope/invoices")) == (404, "subscription_not_found")
    assert code(c.get("/admin/subscriptions?status=zombie")) == (422, "invalid_status")
    assert code(c.get("/admin/invoices?status=zombie")) == (422, "invalid_status")
    assert code(c.post("/admin/invoices/inv_nope/settle")) == (404, "invoice_not_found")
    assert code(c.get("/admin/invoices/inv_nope")) == (404, "invoice_not_found")
    assert code(c.post(f"/admin/subscriptions/{sid}/retry-renewal")) == (409, "nothing_to_retry")
    assert c.post("/admin/test-clock", json={"advance_seconds": -5}).status_code == 422
    assert c.post("/admin/test-clock", json={"advance_seconds": "soon"}).status_code == 422
    assert (
        c.post("/admin/subscriptions", headers={"Authorization": "Bearer nope"}, json={}).status_code == 401
    )
    r = c.post(f"/admin/subscriptions/{sid}/cancel", json={"at_period_end": True})
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is True
    r = c.post(f"/admin/subscriptions/{sid}/keep")
    assert r.status_code == 200 and r.json()["cancel_at_period_end"] is False
    # listed, shown, canceled once
    assert [s["id"] for s in c.get(f"/admin/subscriptions?customer_id={cid}").json()["data"]] == [sid]
    r = c.post(f"/admin/subscriptions/{sid}/cancel", json={"at_period_end": False})
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert code(c.post(f"/admin/subscriptions/{sid}/cancel")) == (409, "subscription_not_cancelable")
    assert code(c.post(f"/admin/subscriptions/{sid}/keep")) == (409, "subscription_not_active")
    # a new subscription after a canceled one is fine
    assert post({"customer_id": cid, "plan": "pro"}).status_code == 201


def test_the_test_clock_is_refused_when_off(client: TestClient) -> None:
    assert code(client.post("/admin/test-clock", json={"advance_seconds": 60})) == (
        404,
        "test_clock_disabled",
    )
    assert code(client.get("/admin/test-clock")) == (404, "test_clock_disabled")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_file: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLLKEEP_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOLLKEEP_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("TOLLKEEP_CATALOG_PATH", str(catalog_file))
    return tmp_path


def test_cli_subscriptions_and_invoices(workdir: Path) -> None:
    cli("migrate")
    cli("customers", "create", "alice")
    sub = json.loads(cli("subscriptions", "create", "alice", "--plan", "pro", "--json"))
    assert sub["status"] == "active" and sub["plan"] == "pro"
    listed = json.loads(cli("subscriptions", "list", "--customer", "alice", "--json"))
    assert [s["id"] for s in listed] == [sub["id"]]
    assert sub["id"] in cli("subscriptions", "list")
    assert json.loads(cli("subscriptions", "show", sub["id"], "--json"))["cycle"] == 1
    assert json.loads(cli("invoices", "list", "--json")) == []
    out = json.loads(cli("subscriptions", "cancel", sub["id"], "--at-period-end", "--json"))
    assert out["cancel_at_period_end"] is True
    assert json.loads(cli("subscriptions", "keep", sub["id"], "--json"))["cancel_at_period_end"] is False
    assert json.loads(cli("subscriptions", "cancel", sub["id"], "--json"))["status"] == "canceled"
