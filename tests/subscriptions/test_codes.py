"""Codes on SQLite and PostgreSQL: discounts at subscription creation, on renewals (forever) and on
upgrades (the invoice shows the discount), free plans and free licences, the rules (expiry,
plans, disabled, once per customer), the last redemption taken once under concurrency, the CLI."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import cli, new_customer
from tollkeep.kit.clock import iso
from tollkeep.kit.errors import Conflict
from tollkeep.runtime import Tollkeep

from .helpers import advance, at, expected, topics


def code(c: TestClient, **body: Any) -> dict[str, Any]:
    r = c.post("/admin/codes", json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_forever_discount_at_creation_and_renewal(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    code(c, code="save20", percent=20, plans=["pro", "team"], duration="forever", max_redemptions=5)
    cid, key = new_customer(c, "buyer")
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro", "code": "SAVE20"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert (sub["period_price"], sub["discount_code"]) == (2320, "SAVE20")
    assert c.get("/admin/codes/save20").json()["redemptions"] == 1
    # the upgrade's credit is what was paid (2320), the new plan discounted too (7920)
    advance(c, seconds=86_400 * 10)
    now = at(c.get("/admin/test-clock").json()["now"])
    q = c.post("/v1/upgrade-quote", json={"plan": "team"}, headers=bearer(key)).json()
    start, end = at(sub["current_period_start"]), at(sub["current_period_end"])
    assert q["proration"]["new_per_period"] == 7920
    assert q["amount_due"] == expected(2320, 7920, start, end, now)
    # the same customer cannot redeem it again (the quote says so too)
    r = c.post("/v1/upgrade-quote", json={"plan": "team", "code": "save20"}, headers=bearer(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "code_already_redeemed"
    r = c.post("/v1/upgrade", json={"plan": "team", "code": "save20"}, headers=bearer(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "code_already_redeemed"
    # the renewal shows the discount
    advance(c, end)
    inv = c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"][0]
    assert (inv["amount"], inv["discount"]) == (2320, {"code": "SAVE20", "listed_amount_off": 580})
    c.post(f"/admin/invoices/{inv['id']}/settle")
    assert [t for t, _ in topics(stk)].count("code.redeemed") == 1


def test_fixed_once_code_on_an_upgrade_and_the_rules(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    code(c, code="TEN", amount=1000, currency="usd", plans=["team"])
    code(c, code="EUROS", amount=1000, currency="eur")
    code(c, code="OLD", percent=50, expires_at=iso(stk.clock.now() + timedelta(seconds=60)))
    code(c, code="OFF", percent=50)
    assert c.post("/admin/codes/off/disable").json()["disabled"] is True
    cid, key = new_customer(c, "buyer")
    sub = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro"}).json()
    advance(c, seconds=120)
    for name, status, err in (
        ("nope", 404, "code_not_found"),
        ("OLD", 409, "code_expired"),
        ("OFF", 409, "code_disabled"),
        ("EUROS", 422, "code_not_applicable"),
    ):
        r = c.post("/v1/upgrade-quote", json={"plan": "team", "code": name}, headers=bearer(key))
        assert (r.status_code, r.json()["error"]["code"]) == (status, err), name
    r = c.post("/v1/upgrade-quote", json={"plan": "enterprise", "code": "TEN"}, headers=bearer(key))
    assert r.json()["error"]["code"] == "code_not_applicable"
    now = at(c.get("/admin/test-clock").json()["now"])
    r = c.post("/v1/upgrade", json={"plan": "team", "code": "ten"}, headers=bearer(key))
    assert r.status_code == 200, r.text
    inv = r.json()["invoice"]
    start, end = at(sub["current_period_start"]), at(sub["current_period_end"])
    assert inv["amount"] == expected(2900, 8900, start, end, now)
    assert inv["discount"]["code"] == "TEN" and inv["discount"]["listed_amount_off"] > 0
    c.post(f"/admin/invoices/{inv['id']}/settle")
    # once: the renewal is at Team's full price
    advance(c, end)
    renewal = [
        i
        for i in c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"]
        if i["kind"] == "renewal"
    ]
    assert [(i["amount"], i["discount"]) for i in renewal] == [(9900, None)]
    c.post(f"/admin/invoices/{renewal[0]['id']}/settle")


def test_free_plan_and_free_licence_codes(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    code(c, code="FREEPRO", kind="free_plan", plans=["pro"], duration="forever")
    code(c, code="APP", kind="free_license", plans=["team"], max_redemptions=10)
    cid, key = new_customer(c, "buyer")
    sub = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro", "code": "FREEPRO"}).json()
    assert sub["period_price"] == 0
    advance(c, at(sub["current_period_end"]))  # the free renewal settles itself
    s2 = c.get(f"/admin/subscriptions/{sub['id']}").json()
    assert (s2["status"], s2["cycle"]) == ("active", 2)
    assert [i["amount"] for i in c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"]] == [0]
    r = c.post("/v1/codes/redeem", json={"code": "app"}, headers=bearer(key))
    assert r.status_code == 201, r.text
    assert r.json()["key"] and c.get(f"/admin/licenses/{r.json()['id']}").json()["plan"] == "team"
    r = c.post("/v1/codes/redeem", json={"code": "app"}, headers=bearer(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "code_already_redeemed"
    r = c.post("/v1/codes/redeem", json={"code": "FREEPRO"}, headers=bearer(key))
    assert r.status_code == 422


def test_the_last_redemption_is_taken_once_under_concurrency(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    code(c, code="LAST", percent=10, max_redemptions=3)
    customers = [new_customer(c, f"b{i}")[0] for i in range(10)]
    results: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(customers))

    def go(cid: str) -> None:
        barrier.wait()
        try:
            stk.subscriptions.create(cid, "pro", code="LAST")
            out = "ok"
        except Conflict as exc:
            out = exc.code
        with lock:
            results.append(out)

    threads = [threading.Thread(target=go, args=(cid,)) for cid in customers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["code_exhausted"] * 7 + ["ok"] * 3
    assert c.get("/admin/codes/LAST").json()["redemptions"] == 3
    subs = c.get("/admin/subscriptions").json()["data"]
    assert len(subs) == 3 and all(s["period_price"] == 2610 for s in subs)


def test_admin_code_validation(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    for body in (
        {"code": "A"},  # neither percent nor amount
        {"code": "A", "percent": 10, "amount": 5, "currency": "usd"},
        {"code": "A", "amount": 5},  # no currency
        {"code": "A", "percent": 101},
        {"code": "A", "percent": 5, "plans": ["nope"]},
        {"code": "A", "kind": "free_license", "plans": []},
    ):
        assert c.post("/admin/codes", json=body).status_code == 422, body
    code(c, code="dup", percent=5)
    assert c.post("/admin/codes", json={"code": "DUP", "percent": 5}).json()["error"]["code"] == "code_exists"
    assert c.get("/admin/codes/none").status_code == 404


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, catalog_file: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLLKEEP_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOLLKEEP_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("TOLLKEEP_CATALOG_PATH", str(catalog_file))
    return tmp_path


def test_cli_codes_and_plan_changes(workdir: Path) -> None:
    cli("migrate")
    cli("customers", "create", "alice")
    made = json.loads(cli("codes", "create", "spring", "--percent", "15", "--plan", "pro", "--json"))
    assert (made["code"], made["percent"], made["plans"]) == ("SPRING", 15, ["pro"])
    assert "SPRING" in cli("codes", "list")
    sub = json.loads(cli("subscriptions", "create", "alice", "--plan", "pro", "--code", "spring", "--json"))
    assert sub["period_price"] == 2465
    assert json.loads(cli("codes", "disable", "spring", "--json"))["disabled"] is True
    out = json.loads(
        cli("subscriptions", "change-plan", sub["id"], "--plan", "starter", "--when", "renewal", "--json")
    )
    assert out["status"] == "scheduled"
    assert (
        json.loads(cli("subscriptions", "cancel-scheduled-change", sub["id"], "--json"))["status"]
        == "canceled"
    )
