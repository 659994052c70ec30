"""The whole life of a subscription driven over HTTP with the test clock: create → period end
(invoice open, past_due) → settle (active, cycle 2, allowance once) → unpaid past end + grace
(lapsed, free plan, keys suspended) → the late invoice settled (reactivated)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.ledger.models import Grant
from tollkeep.runtime import Tollkeep


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def advance(c: TestClient, until: datetime | None = None, seconds: int | None = None) -> dict[str, Any]:
    if seconds is None:
        assert until is not None
        now = at(c.get("/admin/test-clock").json()["now"])
        seconds = int((until - now).total_seconds()) + 1
    r = c.post("/admin/test-clock", json={"advance_seconds": seconds})
    assert r.status_code == 200, r.text
    return r.json()


def plan_grants(tk: Tollkeep, cid: str) -> list[Any]:
    G = Grant.__table__
    with tk.db.scope(write=False) as s:
        return list(s.execute(select(G).where(G.c.source == "plan_allowance").order_by(G.c.created_at)).all())


def test_create_renew_lapse_reactivate(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    cid, key = new_customer(c, "buyer")
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 10  # the free plan

    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro", "provider": "manual"})
    assert r.status_code == 201, r.text
    sub = r.json()
    sid = sub["id"]
    assert sub["status"] == "active" and sub["cycle"] == 1 and sub["current_period_end"]
    # the unused free allowance carries over; cycle 1's allowance is granted
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 10 + 1000
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "pro"

    # the period ends: the invoice of cycle 2 opens, past_due; cycle 1's allowance expires
    advance(c, at(sub["current_period_end"]))
    sub = c.get(f"/admin/subscriptions/{sid}").json()
    assert sub["status"] == "past_due" and sub["cycle"] == 1 and sub["grace_until"]
    invoices = c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"]
    assert [(i["cycle"], i["status"], i["amount"], i["currency"]) for i in invoices] == [
        (2, "open", 2900, "USD")
    ]
    audit = invoices[0]["rate_audit"]
    assert (audit["listed_currency"], audit["listed_amount"], audit["rate"]) == ("USD", 2900, "1")
    assert audit["rate_source"] == "identity" and audit["rated_at"]
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 10

    # settle: active at cycle 2, its allowance granted; settling again changes nothing
    inv = invoices[0]["id"]
    r = c.post(f"/admin/invoices/{inv}/settle")
    assert r.status_code == 200, r.text
    assert r.json()["changed"] is True and r.json()["subscription"]["status"] == "active"
    sub = c.get(f"/admin/subscriptions/{sid}").json()
    assert sub["status"] == "active" and sub["cycle"] == 2
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 1010
    r = c.post(f"/admin/invoices/{inv}/settle", json={"provider_payment_ref": "again"})
    assert r.status_code == 200 and r.json()["changed"] is False
    advance(c, seconds=0)  # the workers again: nothing new
    assert len(c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"]) == 1
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 1010

    # unpaid past period end + grace (3 days): lapsed, back on the free plan, keys suspended
    end2 = at(sub["current_period_end"])
    advance(c, end2)
    assert c.get(f"/admin/subscriptions/{sid}").json()["status"] == "past_due"
    advance(c, seconds=3 * 86400)
    sub = c.get(f"/admin/subscriptions/{sid}").json()
    assert sub["status"] == "lapsed" and sub["cycle"] == 2 and sub["suspended_keys"]
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "free"
    assert c.get("/v1/balance", headers=bearer(key)).status_code != 200
    late = [i for i in c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"] if i["cycle"] == 3]
    assert late and late[0]["status"] == "open"

    # the late invoice is paid: reactivated at cycle 3, the plan and the keys come back
    r = c.post(f"/admin/invoices/{late[0]['id']}/settle", json={"provider_payment_ref": "pay_late"})
    assert r.status_code == 200, r.text
    sub = c.get(f"/admin/subscriptions/{sid}").json()
    assert sub["status"] == "active" and sub["cycle"] == 3 and sub["suspended_keys"] == []
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "pro"
    assert c.get("/v1/balance", headers=bearer(key)).json()["balance"] == 1010
    # one allowance per cycle (1, 2, 3), each keyed by subscription and cycle, never twice
    notes = [g.note for g in plan_grants(stk, cid) if "pro" in (g.note or "")]
    assert notes == [f"plan pro allowance {sid}:{n}" for n in (1, 2, 3)]
    assert c.get("/admin/ledger/verify").json()["ok"] is True
