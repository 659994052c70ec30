"""Plan changes over HTTP on SQLite and PostgreSQL: quotes, prorated upgrades (an invoice applied
on settle, idempotently, the same subscription, key and licence id), a double upgrade in one
period credited what was paid, downgrades scheduled for the renewal and cancellable, an admin's
forced change. Every amount is checked against an independent computation; the ledger is
verified after each test (the stk fixture)."""

from __future__ import annotations

from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep
from tollkeep.subscriptions import InvoiceProviderError, InvoiceRequest, ProviderInvoice

from .helpers import advance, at, expected, topics

DAY = 86_400


def subscribe(c: TestClient, plan: str = "pro", ext: str = "buyer") -> tuple[str, str, dict[str, Any]]:
    cid, key = new_customer(c, ext)
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": plan, "provider": "manual"})
    assert r.status_code == 201, r.text
    return cid, key, r.json()


def balance(c: TestClient, key: str) -> int:
    return int(c.get("/v1/balance", headers=bearer(key)).json()["balance"])


def test_quote_upgrade_settle_double_upgrade(stk: Tollkeep, sclient: TestClient, clock: FrozenClock) -> None:
    c = sclient
    cid, key, sub = subscribe(c)
    sid = sub["id"]
    start, end = at(sub["current_period_start"]), at(sub["current_period_end"])
    lic = c.post(
        "/admin/licenses", json={"customer_id": cid, "plan": "pro", "max_machines": None, "expires_at": None}
    )
    assert lic.status_code == 201, lic.text
    assert balance(c, key) == 10 + 1000

    advance(c, seconds=7 * DAY + 3_600)
    now = at(c.get("/admin/test-clock").json()["now"])
    q = c.post("/v1/upgrade-quote", json={"plan": "team"}, headers=bearer(key))
    assert q.status_code == 200, q.text
    quote = q.json()
    owed1 = expected(2900, 9900, start, end, now)
    assert quote["kind"] == "upgrade" and quote["amount_due"] == owed1 and quote["currency"] == "USD"
    assert quote["entitlements_change"] == "on_payment"
    assert quote["next_renewal"] == {
        "at": sub["current_period_end"],
        "plan": "team",
        "listed_currency": "USD",
        "listed_amount": 9900,
    }
    assert c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"] == []  # the quote wrote nothing

    # the client's numbers are not read: an amount in the body is refused
    r = c.post("/v1/upgrade", json={"plan": "team", "amount_due": 1}, headers=bearer(key))
    assert r.status_code == 422
    h = {**bearer(key), "Idempotency-Key": "up-1"}
    r = c.post("/v1/upgrade", json={"plan": "team"}, headers=h)
    assert r.status_code == 200, r.text
    change = r.json()
    inv = change["invoice"]
    assert change["status"] == "pending" and inv["kind"] == "upgrade" and inv["amount"] == owed1
    assert inv["status"] == "open" and inv["cycle"] == 1
    again = c.post("/v1/upgrade", json={"plan": "team"}, headers=h).json()
    assert again["id"] == change["id"] and again["replayed"] is True
    assert (
        c.post("/v1/upgrade", json={"plan": "enterprise"}, headers=bearer(key)).json()["error"]["code"]
        == "upgrade_pending"
    )
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "pro"  # not before it is paid

    r = c.post(f"/admin/invoices/{inv['id']}/settle")
    assert r.status_code == 200 and r.json()["changed"] is True and r.json()["applied"] is True
    assert c.post(f"/admin/invoices/{inv['id']}/settle").json()["changed"] is False
    s2 = c.get(f"/admin/subscriptions/{sid}").json()
    assert (s2["id"], s2["plan"], s2["period_price"], s2["cycle"]) == (sid, "team", 9900, 1)
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "team"
    assert balance(c, key) == 10 + 1000 + (5000 - 1000)  # the allowance difference, once
    lic2 = c.get(f"/admin/licenses/{lic.json()['id']}").json()
    assert lic2["id"] == lic.json()["id"] and lic2["plan"] == "team" and "sso" in lic2["entitlements"]
    assert c.get("/v1/balance", headers=bearer(key)).status_code == 200  # the same key works

    # a second upgrade in the same period: Team's paid price is the credit, for the time left
    advance(c, seconds=5 * DAY)
    now2 = at(c.get("/admin/test-clock").json()["now"])
    r = c.post("/v1/upgrade", json={"plan": "enterprise", "idempotency_key": "up-2"}, headers=bearer(key))
    owed2 = expected(9900, 29900, start, end, now2)
    assert r.json()["invoice"]["amount"] == owed2
    c.post(f"/admin/invoices/{r.json()['invoice']['id']}/settle")
    assert balance(c, key) == 10 + 1000 + 4000 + 15000
    # the period's total against the time-weighted price of the plans held: one rounding each
    weighted = (
        Decimal(2900) * Decimal((now - start).total_seconds())
        + Decimal(9900) * Decimal((now2 - now).total_seconds())
        + Decimal(29900) * Decimal((end - now2).total_seconds())
    ) / Decimal((end - start).total_seconds())
    assert abs(2900 + owed1 + owed2 - weighted) <= 1
    kinds = [
        (i["kind"], i["amount"], i["status"])
        for i in c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"]
    ]
    assert kinds == [("upgrade", owed1, "paid"), ("upgrade", owed2, "paid")]

    # the renewal charges Enterprise, the new cycle grants Enterprise's allowance
    advance(c, end)
    inv3 = [i for i in c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"] if i["kind"] == "renewal"]
    assert [(i["cycle"], i["plan"], i["amount"]) for i in inv3] == [(2, "enterprise", 29900)]
    c.post(f"/admin/invoices/{inv3[0]['id']}/settle")
    assert balance(c, key) == 10 + 20000
    changed = [p for t, p in topics(stk) if t == "subscription.plan_changed"]
    assert [(p["previous"], p["plan"], p["reason"]) for p in changed] == [
        ("pro", "team", "upgrade"),
        ("team", "enterprise", "upgrade"),
    ]


def test_downgrade_is_scheduled_cancellable_and_applied_at_renewal(
    stk: Tollkeep, sclient: TestClient
) -> None:
    c = sclient
    cid, key, sub = subscribe(c, "team")
    sid = sub["id"]
    advance(c, seconds=3 * DAY)
    q = c.post(
        "/v1/upgrade-quote", json={"plan": "starter", "subscription_id": sid}, headers=bearer(key)
    ).json()
    assert (q["kind"], q["amount_due"], q["entitlements_change"]) == ("downgrade", 0, "at_renewal")
    assert q["entitlements_change_at"] == sub["current_period_end"]
    r = c.post("/v1/upgrade", json={"plan": "starter"}, headers=bearer(key))
    assert r.json()["status"] == "scheduled" and r.json()["invoice"] is None
    assert c.get(f"/admin/subscriptions/{sid}").json()["scheduled_change"]["plan"] == "starter"
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "team"
    r = c.post(f"/admin/subscriptions/{sid}/cancel-scheduled-change")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert (
        c.post(f"/admin/subscriptions/{sid}/cancel-scheduled-change").json()["error"]["code"]
        == "no_scheduled_change"
    )
    r = c.post(f"/admin/subscriptions/{sid}/change-plan", json={"plan": "starter", "when": "renewal"})
    assert r.status_code == 200 and r.json()["status"] == "scheduled"

    advance(c, at(sub["current_period_end"]))
    invs = c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"]
    assert [(i["cycle"], i["plan"], i["amount"]) for i in invs] == [(2, "starter", 900)]
    # invoiced: no longer cancellable
    assert (
        c.post(f"/admin/subscriptions/{sid}/cancel-scheduled-change").json()["error"]["code"]
        == "change_already_invoiced"
    )
    c.post(f"/admin/invoices/{invs[0]['id']}/settle")
    s2 = c.get(f"/admin/subscriptions/{sid}").json()
    assert (s2["plan"], s2["cycle"], s2["period_price"], s2["scheduled_change"]) == ("starter", 2, 900, None)
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "starter"
    assert balance(c, key) == 10 + 300


def test_zero_charge_and_admin_forced_changes_apply_at_once(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    cid, key, sub = subscribe(c, "pro")
    sid = sub["id"]
    # forced now: no invoice, the plan and its allowance difference at once
    r = c.post(f"/admin/subscriptions/{sid}/change-plan", json={"plan": "team", "when": "now"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "applied" and r.json()["invoice"] is None
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "team"
    assert balance(c, key) == 10 + 1000 + 4000
    assert c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"] == []
    # at the very end of the period an upgrade owes less than half a cent: applied at once
    advance(
        c, seconds=int((at(sub["current_period_end"]) - at(sub["current_period_start"])).total_seconds()) - 1
    )
    q = c.post("/v1/upgrade-quote", json={"plan": "enterprise"}, headers=bearer(key)).json()
    assert q["kind"] == "zero" and q["amount_due"] == 0
    r = c.post("/v1/upgrade", json={"plan": "enterprise"}, headers=bearer(key))
    assert r.json()["status"] == "applied"
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "enterprise"


def test_bad_input(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    _cid, key, sub = subscribe(c, "pro")
    r = c.post("/v1/upgrade-quote", json={"plan": "nope"}, headers=bearer(key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "plan_not_found"
    r = c.post("/v1/upgrade-quote", json={"plan": "team"}, headers=bearer("tk_garbage"))
    assert r.status_code == 401
    r = c.post("/v1/upgrade-quote", json={"plan": "pro"}, headers=bearer(key))
    assert r.status_code == 409 and r.json()["error"]["code"] == "same_plan"
    r = c.post("/v1/upgrade-quote", json={"plan": "yearly"}, headers=bearer(key))
    assert r.status_code == 422 and r.json()["error"]["code"] == "period_mismatch"
    r = c.post("/v1/upgrade-quote", json={"plan": "free"}, headers=bearer(key))
    assert r.status_code == 422
    other, okey = new_customer(c, "nosub")
    r = c.post("/v1/upgrade-quote", json={"plan": "team"}, headers=bearer(okey))
    assert r.status_code == 404 and r.json()["error"]["code"] == "subscription_not_found"
    r = c.post("/v1/upgrade-quote", json={"plan": "team", "customer_id": other}, headers=bearer(key))
    assert r.status_code == 403
    r = c.post(f"/admin/subscriptions/{sub['id']}/change-plan", json={"plan": "team", "when": "later"})
    assert r.status_code == 422
    h = {**bearer(key), "Idempotency-Key": "k"}
    assert c.post("/v1/upgrade", json={"plan": "team"}, headers=h).status_code == 200
    r = c.post("/v1/upgrade", json={"plan": "enterprise"}, headers=h)
    assert r.status_code == 409 and r.json()["error"]["code"] == "idempotency_conflict"


def test_an_upgrade_unpaid_when_the_period_ends_is_void(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    _cid, key, sub = subscribe(c, "pro")
    advance(c, seconds=DAY)
    inv = c.post("/v1/upgrade", json={"plan": "team"}, headers=bearer(key)).json()["invoice"]
    advance(c, at(sub["current_period_end"]))
    assert c.get(f"/admin/invoices/{inv['id']}").json()["status"] == "void"
    r = c.post(f"/admin/invoices/{inv['id']}/settle")
    assert r.status_code == 409 and r.json()["error"]["code"] == "invoice_void"
    changes = c.get(f"/admin/subscriptions/{sub['id']}/plan-changes").json()["data"]
    assert [ch["status"] for ch in changes] == ["void"]
    renewal = [
        i
        for i in c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"]
        if i["kind"] == "renewal"
    ]
    assert [(i["plan"], i["amount"]) for i in renewal] == [("pro", 2900)]
    # a new upgrade is possible again in the next cycle
    c.post(f"/admin/invoices/{renewal[0]['id']}/settle")
    assert c.post("/v1/upgrade", json={"plan": "team"}, headers=bearer(key)).json()["status"] == "pending"


@pytest.fixture
def settings_kw(request: pytest.FixtureRequest) -> dict[str, object]:
    return dict(getattr(request, "param", {}))


@pytest.mark.parametrize(
    "settings_kw",
    [{"subscriptions_invoice_currency": "BTC", "subscriptions_fixed_rates": {"USD/BTC": "0.00001234567"}}],
    indirect=True,
)
def test_a_converted_upgrade_rounds_once_and_records_the_rate(stk: Tollkeep, sclient: TestClient) -> None:
    """A server key names the customer; the prorated USD difference is converted exact and
    rounded once, half up, to sats."""
    c = sclient
    cid, _key, sub = subscribe(c, "pro")
    sk = c.post("/admin/server-keys", json={"name": "backend"}).json()["key"]
    assert c.post("/v1/upgrade-quote", json={"plan": "team"}, headers=bearer(sk)).json()["error"]["code"] == (
        "customer_id_required"
    )
    advance(c, seconds=9 * DAY + 17)
    now = at(c.get("/admin/test-clock").json()["now"])
    start, end = at(sub["current_period_start"]), at(sub["current_period_end"])
    q = c.post("/v1/upgrade-quote", json={"plan": "team", "customer_id": cid}, headers=bearer(sk)).json()
    left = Decimal((end - now) // timedelta(microseconds=1)) / Decimal(
        (end - start) // timedelta(microseconds=1)
    )
    exact_sats = Decimal(7000) * left / 100 * Decimal("0.00001234567") * 10**8
    want = int(exact_sats.quantize(Decimal(1), rounding=ROUND_HALF_UP))
    assert (q["currency"], q["amount_due"]) == ("BTC", want)
    assert q["rate_audit"]["rate"] == "0.00001234567" and q["rate_audit"]["rate_source"] == "fixed"
    r = c.post("/v1/upgrade", json={"plan": "team", "customer_id": cid}, headers=bearer(sk))
    inv = r.json()["invoice"]
    assert (inv["currency"], inv["amount"], inv["rate_audit"]["rate"]) == ("BTC", want, "0.00001234567")
    assert inv["rate_audit"]["listed_currency"] == "USD"
    c.post(f"/admin/invoices/{inv['id']}/settle")
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "team"


class OnceDown:
    """A provider that refuses its first invoice, then makes them (with a pay URL)."""

    name = "oncedown"

    def __init__(self) -> None:
        self.calls: list[InvoiceRequest] = []

    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        self.calls.append(req)
        if len(self.calls) == 1:
            raise InvoiceProviderError("provider down")
        return ProviderInvoice(ref=f"prov_{req.invoice_id}", pay_url=f"https://pay.example/{req.invoice_id}")


def test_the_provider_invoice_of_an_upgrade(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    prov = OnceDown()
    stk.subscriptions.register_provider(prov)
    cid, key = new_customer(c, "buyer")
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro", "provider": "oncedown"})
    sid = r.json()["id"]
    advance(c, seconds=DAY)
    r = c.post("/v1/upgrade", json={"plan": "team"}, headers=bearer(key))
    assert r.status_code == 502 and r.json()["error"]["code"] == "invoice_provider_failed"
    [failed] = c.get(f"/admin/subscriptions/{sid}/invoices").json()["data"]
    assert failed["status"] == "void" and failed["last_error"]
    r = c.post("/v1/upgrade", json={"plan": "team"}, headers=bearer(key))
    assert r.status_code == 200, r.text
    inv = r.json()["invoice"]
    assert inv["status"] == "open" and inv["pay_url"] == f"https://pay.example/{inv['id']}"
    assert prov.calls[-1].invoice_id == inv["id"] and prov.calls[-1].amount == inv["amount"]
    c.post(f"/admin/invoices/{inv['id']}/settle", json={"provider_payment_ref": "pay_1"})
    assert c.get(f"/admin/customers/{cid}").json()["plan"] == "team"
