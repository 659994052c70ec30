"""Pause and resume, over the admin API and the CLI: a paused subscription is not renewed and not
lapsed, its customer is on the default plan with the keys the plan suspends suspended; resuming
starts a new period (cycle + 1 invoiced now), granted when paid, once; events go to the outbox."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.factories import cli
from tollkeep.outbox.models import OutboxEvent
from tollkeep.runtime import Tollkeep


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def topics(tk: Tollkeep, topic: str) -> list[dict[str, Any]]:
    ob = OutboxEvent.__table__
    with tk.db.scope(write=False) as s:
        return [r.payload for r in s.execute(select(ob.c.payload).where(ob.c.topic == topic)).all()]


def test_pause_then_resume_over_http(stk: Tollkeep, sclient: TestClient) -> None:
    cid = str(stk.customers.create("c1")["id"])
    key = stk.keys.create(cid)
    sub = sclient.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro"}).json()
    assert stk.balance(cid)["balance"] == 1010  # cycle 1, and the free allowance carried over
    stk.advance_test_clock(10 * 86400)

    r = sclient.post(f"/admin/subscriptions/{sub['id']}/pause")
    assert r.status_code == 200, r.text
    paused = r.json()
    assert paused["status"] == "paused" and paused["paused_at"] is not None
    assert stk.customers.get(cid)["plan"] == "free"
    assert stk.keys.get(key["id"])["status"] == "suspended"  # pro: suspend_keys_on_cancel
    assert sclient.post(f"/admin/subscriptions/{sub['id']}/pause").status_code == 409
    [ev] = topics(stk, "subscription.paused")
    assert (
        ev["subscription_id"] == sub["id"]
        and ev["now_plan"] == "free"
        and ev["suspended_keys"] == [key["id"]]
    )

    # two months: neither renewed nor lapsed, nothing invoiced, no allowance
    stk.advance_test_clock(60 * 86400)
    view = sclient.get(f"/admin/subscriptions/{sub['id']}").json()
    assert (view["status"], view["cycle"], view["open_invoice"]) == ("paused", 1, None)
    assert sclient.get(f"/admin/subscriptions/{sub['id']}/invoices").json() == {"data": []}
    low = stk.balance(cid)["balance"]

    r = sclient.post(f"/admin/subscriptions/{sub['id']}/resume")
    assert r.status_code == 200, r.text
    resumed = r.json()
    now = stk.clock.now()
    assert resumed["status"] == "past_due" and resumed["paused_at"] is None
    assert abs((at(resumed["current_period_end"]) - now).total_seconds()) < 4 * 86400  # the new start
    assert stk.customers.get(cid)["plan"] == "pro" and stk.keys.get(key["id"])["status"] == "active"
    assert sclient.post(f"/admin/subscriptions/{sub['id']}/resume").status_code == 409
    assert [e["cycle"] for e in topics(stk, "subscription.resumed")] == [2]
    assert stk.balance(cid)["balance"] == low  # nothing granted before it is paid

    stk.advance_test_clock(1)  # the worker invoices cycle 2 at once
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["cycle"], inv["status"]) == (2, "open")
    assert at(inv["period_start"]) <= now < at(inv["period_end"])
    settled = sclient.post(f"/admin/invoices/{inv['id']}/settle").json()
    assert settled["changed"] is True and settled["subscription"]["cycle"] == 2
    assert stk.balance(cid)["balance"] == low + 1000
    again = sclient.post(f"/admin/invoices/{inv['id']}/settle").json()
    assert again["changed"] is False and stk.balance(cid)["balance"] == low + 1000


def test_a_paused_past_due_keeps_its_open_invoice_which_settles_after_resume(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro")
    stk.advance_test_clock(31 * 86400 + 1)
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert stk.subscriptions.get(sub["id"])["status"] == "past_due" and inv["status"] == "open"
    stk.subscriptions.pause(sub["id"])
    # paid while paused: refused (the payments applier marks the webhook failed, replayable)
    try:
        stk.subscriptions.settle_invoice(inv["id"], "early")
    except Exception as exc:
        assert getattr(exc, "code", None) == "invoice_not_settleable"
    else:
        raise AssertionError("a paused subscription's invoice settled")
    stk.advance_test_clock(30 * 86400)  # past the grace: still paused, not lapsed
    assert stk.subscriptions.get(sub["id"])["status"] == "paused"
    stk.subscriptions.resume(sub["id"])
    stk.advance_test_clock(1)
    assert len(stk.subscriptions.invoices(sub["id"])) == 1  # the same invoice, not a second one
    out = stk.subscriptions.settle_invoice(inv["id"], "late")
    assert out["changed"] and out["subscription"]["status"] == "active" and out["subscription"]["cycle"] == 2


def test_pause_of_a_lapsed_or_canceled_subscription_is_refused_and_cancel_works_when_paused(
    stk: Tollkeep, sclient: TestClient
) -> None:
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro")
    stk.advance_test_clock(40 * 86400)  # past period end + grace: lapsed
    assert stk.subscriptions.get(sub["id"])["status"] == "lapsed"
    r = sclient.post(f"/admin/subscriptions/{sub['id']}/pause")
    assert r.status_code == 409 and r.json()["error"]["code"] == "subscription_not_pausable"
    cid2 = str(stk.customers.create("c2")["id"])
    sub2 = stk.subscriptions.create(cid2, "team")
    stk.subscriptions.pause(sub2["id"])
    assert stk.subscriptions.cancel(sub2["id"])["status"] == "canceled"
    r = sclient.post(f"/admin/subscriptions/{sub2['id']}/resume")
    assert r.status_code == 409 and r.json()["error"]["code"] == "subscription_not_paused"


def test_cli_pause_and_resume(stk: Tollkeep, monkeypatch: Any) -> None:
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro")
    monkeypatch.setenv("TOLLKEEP_DATABASE_URL", stk.settings.database_url)
    monkeypatch.setenv("TOLLKEEP_CATALOG_PATH", str(stk.settings.catalog_path))
    assert json.loads(cli("subscriptions", "pause", sub["id"], "--json"))["status"] == "paused"
    assert json.loads(cli("subscriptions", "resume", sub["id"], "--json"))["status"] == "past_due"


def test_a_paused_subscription_is_not_replaced_by_a_new_one(stk: Tollkeep, sclient: TestClient) -> None:
    cid = str(stk.customers.create("keeps-paused")["id"])
    sub = stk.subscriptions.create(cid, "pro")
    stk.subscriptions.pause(sub["id"])
    r = sclient.post("/admin/subscriptions", json={"customer_id": cid, "plan": "team", "provider": "manual"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "subscription_exists"
    assert stk.subscriptions.get(sub["id"])["status"] == "paused"
