"""Renewals through BTCPay and Zaprite: the renewal worker creates the provider's invoice (our
invoice id in its metadata, found again on a retry: a worker killed after the provider answered
creates nothing twice), and the provider's verified "paid" webhook settles our invoice inside the
payments applier's transaction, once (duplicates, redeliveries and reconciles change nothing;
forged webhooks are refused). The providers are fakes over real HTTP (tests/payments/fakes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import func, select

from tests.conftest import make_settings
from tests.payments.fakes.btcpay_server import FakeBTCPay
from tests.payments.fakes.zaprite_server import FakeZaprite
from tollkeep.payments.models import Payment
from tollkeep.payments.providers.base import SignatureInvalid
from tollkeep.payments.providers.btcpay import BTCPay
from tollkeep.payments.providers.zaprite import Zaprite
from tollkeep.runtime import Tollkeep
from tollkeep.subscriptions import InvoiceProviderError, InvoiceRequest, ProviderInvoice


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def until(tk: Tollkeep, when: str, extra: int = 1) -> dict[str, Any]:
    secs = int((at(when) - tk.clock.now()).total_seconds()) + extra
    return tk.advance_test_clock(max(secs, 0))


def balance(tk: Tollkeep, cid: str) -> int:
    return int(tk.balance(cid)["balance"])


def payments(tk: Tollkeep) -> int:
    with tk.db.scope(write=False) as s:
        return int(s.execute(select(func.count()).select_from(Payment.__table__)).scalar_one())


@pytest.fixture
def btcpay() -> Iterator[FakeBTCPay]:
    with FakeBTCPay() as fake:
        yield fake


@pytest.fixture
def zaprite() -> Iterator[FakeZaprite]:
    with FakeZaprite() as fake:
        yield fake


def with_btcpay(tk: Tollkeep, fake: FakeBTCPay) -> BTCPay:
    p = BTCPay(
        url=fake.url,
        api_key=fake.api_key,
        store_id=fake.store_id,
        webhook_secret=fake.webhook_secret,
        timeout=5.0,
    )
    tk.providers.register(p)
    tk.subscriptions.register_provider(p)
    return p


def with_zaprite(tk: Tollkeep, fake: FakeZaprite) -> Zaprite:
    p = Zaprite(url=fake.url, api_key=fake.api_key, timeout=5.0)
    tk.providers.register(p)
    tk.subscriptions.register_provider(p)
    return p


def creations(fake: FakeBTCPay | FakeZaprite) -> int:
    return sum(1 for r in fake.requests if r.method == "POST")


class CrashAfterCreate:
    """The worker's view of a provider when the process dies right after the provider created the
    invoice and before our database heard of it: the real call happens, its answer is lost."""

    def __init__(self, real: Any, crashes: int = 1) -> None:
        self.real, self.crashes, self.name = real, crashes, real.name

    def create_invoice(self, req: InvoiceRequest) -> ProviderInvoice:
        made = self.real.create_invoice(req)
        if self.crashes > 0:
            self.crashes -= 1
            raise InvoiceProviderError("the worker died after the provider answered")
        return made  # type: ignore[no-any-return]


# ---- BTCPay ----------------------------------------------------------------------------------------
def test_btcpay_renewal_is_invoiced_there_and_its_settled_webhook_renews_once(
    stk: Tollkeep, btcpay: FakeBTCPay
) -> None:
    with_btcpay(stk, btcpay)
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    assert balance(stk, cid) == 1010
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["status"], inv["cycle"], inv["provider"]) == ("open", 2, "btcpay")
    ref = inv["provider_invoice_ref"]
    theirs = btcpay.invoices[ref]
    assert theirs["metadata"]["orderId"] == inv["id"] and theirs["metadata"]["tollkeep_invoice"] == inv["id"]
    assert (theirs["amount"], theirs["currency"]) == ("29.00", "USD")
    assert inv["pay_url"] == theirs["checkoutLink"] and creations(btcpay) == 1
    assert (
        balance(stk, cid) == 10
    )  # cycle 1's allowance ended with its period (10: the free plan's, carried over)

    d = btcpay.settle(ref)
    assert not stk.inbox.receive("btcpay", d.body, d.headers)["duplicate"]
    assert stk.inbox.process() == {"processed": 1}
    view = stk.subscriptions.get(sub["id"])
    assert (view["status"], view["cycle"]) == ("active", 2)
    paid = stk.subscriptions.get_invoice(inv["id"])
    assert (paid["status"], paid["provider_payment_ref"]) == ("paid", ref)
    assert balance(stk, cid) == 1010 and payments(stk) == 1

    # BTCPay's "Redeliver": the same inbox event; a reconcile of the same invoice: a new inbox
    # event, the same payment id: nothing changes
    again = btcpay.redeliver(d)
    assert stk.inbox.receive("btcpay", again.body, again.headers)["duplicate"]
    for event in stk.providers.get("btcpay").settled_since(datetime(2000, 1, 1)):
        stk.inbox.store_event("btcpay", event, json.dumps(dict(event.payload)).encode())
    assert stk.inbox.process() == {"processed": 1}
    assert stk.subscriptions.get(sub["id"])["cycle"] == 2
    assert balance(stk, cid) == 1010 and payments(stk) == 1


def test_a_killed_worker_creates_one_btcpay_invoice_per_cycle(stk: Tollkeep, btcpay: FakeBTCPay) -> None:
    real = with_btcpay(stk, btcpay)
    stk.subscriptions.register_provider(CrashAfterCreate(real))  # type: ignore[arg-type]
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert inv["status"] == "draft" and creations(btcpay) == 1  # made there, lost here
    stk.advance_test_clock(300)  # the back-off's first wait: the worker tries again
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert inv["status"] == "open" and creations(btcpay) == 1  # found by its orderId, not made again
    mine = [i for i in btcpay.invoices.values() if i["metadata"].get("orderId") == inv["id"]]
    assert [i["id"] for i in mine] == [inv["provider_invoice_ref"]]


def test_btcpay_down_backs_off_and_a_forged_settle_is_refused(stk: Tollkeep, btcpay: FakeBTCPay) -> None:
    with_btcpay(stk, btcpay)
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    btcpay.fail_status = 503
    until(stk, sub["current_period_end"])
    view = stk.subscriptions.get(sub["id"])
    assert view["renewal"]["failures"] == 1 and "BTCPay" in view["renewal"]["error"]
    btcpay.fail_status = None
    stk.advance_test_clock(300)
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert inv["status"] == "open"
    d = btcpay.settle(inv["provider_invoice_ref"])
    with pytest.raises(SignatureInvalid):
        stk.inbox.receive("btcpay", d.body, {**d.headers, "BTCPay-Sig": "sha256=" + "0" * 64})
    assert stk.inbox.process() == {}
    assert stk.subscriptions.get_invoice(inv["id"])["status"] == "open" and balance(stk, cid) == 10


@pytest.fixture
def settings_kw(request: pytest.FixtureRequest) -> dict[str, object]:
    return dict(getattr(request, "param", {}))


@pytest.mark.parametrize(
    "settings_kw",
    [{"subscriptions_invoice_currency": "BTC", "subscriptions_fixed_rates": {"USD/BTC": "0.00001234567"}}],
    indirect=True,
)
def test_a_btcpay_invoice_is_in_the_settlement_currency(stk: Tollkeep, btcpay: FakeBTCPay) -> None:
    with_btcpay(stk, btcpay)
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["currency"], inv["amount"]) == ("BTC", 35802)  # 29.00 USD, rounded once
    theirs = btcpay.invoices[inv["provider_invoice_ref"]]
    assert (theirs["amount"], theirs["currency"]) == ("0.00035802", "BTC")
    d = btcpay.settle(theirs["id"])
    stk.inbox.receive("btcpay", d.body, d.headers)
    stk.inbox.process()
    assert stk.subscriptions.get(sub["id"])["cycle"] == 2 and balance(stk, cid) == 1010


def test_a_settle_webhook_of_an_upgrade_applied_already_is_a_no_op(stk: Tollkeep, btcpay: FakeBTCPay) -> None:
    with_btcpay(stk, btcpay)
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    stk.advance_test_clock(10 * 86400)
    change = stk.subscriptions.changes.upgrade(cid, "team", subscription_id=sub["id"])
    inv_id = change["invoice"]["id"]
    inv = stk.subscriptions.get_invoice(inv_id)
    assert inv["status"] == "open" and inv["kind"] == "upgrade"
    theirs = btcpay.invoices[inv["provider_invoice_ref"]]
    assert theirs["metadata"]["tollkeep_invoice"] == inv_id
    # the operator settles it first (a bank transfer seen by hand): the change applies once
    stk.subscriptions.settle_invoice(inv_id, "by-hand")
    after_upgrade = balance(stk, cid)
    assert after_upgrade == 1010 + 4000 and stk.subscriptions.get(sub["id"])["plan"] == "team"
    # then BTCPay says it was paid: recorded, nothing applied again
    d = btcpay.settle(theirs["id"])
    stk.inbox.receive("btcpay", d.body, d.headers)
    assert stk.inbox.process() == {"processed": 1}
    [event] = stk.payments.list_events(provider="btcpay")["data"]
    shown = stk.inbox.show(event["id"])["result"]["effects"]
    assert shown[0]["changed"] is False and shown[0]["invoice_id"] == inv_id
    assert balance(stk, cid) == after_upgrade and payments(stk) == 1


def test_an_underpaid_or_void_invoice_is_not_settled(stk: Tollkeep, btcpay: FakeBTCPay) -> None:
    with_btcpay(stk, btcpay)
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="btcpay")
    until(stk, sub["current_period_end"])
    [inv] = stk.subscriptions.invoices(sub["id"])
    btcpay.invoices[inv["provider_invoice_ref"]]["amount"] = "28.99"  # what BTCPay says it is for
    d = btcpay.settle(inv["provider_invoice_ref"])
    stk.inbox.receive("btcpay", d.body, d.headers)
    assert stk.inbox.process() == {"failed": 1}
    assert stk.subscriptions.get_invoice(inv["id"])["status"] == "open" and balance(stk, cid) == 10
    assert payments(stk) == 0


# ---- Zaprite ---------------------------------------------------------------------------------------
def test_zaprite_renewal_is_an_order_and_its_paid_order_renews_once(
    stk: Tollkeep, zaprite: FakeZaprite
) -> None:
    real = with_zaprite(stk, zaprite)
    stk.subscriptions.register_provider(CrashAfterCreate(real))  # type: ignore[arg-type]
    cid = str(stk.customers.create("c1")["id"])
    sub = stk.subscriptions.create(cid, "pro", provider="zaprite")
    until(stk, sub["current_period_end"])
    assert creations(zaprite) == 1
    stk.advance_test_clock(300)  # the retry finds the order the dead worker made
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert inv["status"] == "open" and creations(zaprite) == 1
    order = zaprite.orders[inv["provider_invoice_ref"]]
    assert order["externalUniqId"] == inv["id"] and order["metadata"]["tollkeep_invoice"] == inv["id"]
    assert (order["amount"], order["currency"]) == (2900, "USD")

    # a forged webhook (the order is not paid at Zaprite): nothing happens
    forged = zaprite.webhook(order["id"], "PAID")
    stk.inbox.receive("zaprite", forged.body, forged.headers)
    stk.inbox.process()
    assert stk.subscriptions.get_invoice(inv["id"])["status"] == "open" and balance(stk, cid) == 10

    d = zaprite.mark_paid(order["id"])
    stk.inbox.receive("zaprite", d.body, d.headers)
    stk.inbox.process()
    view = stk.subscriptions.get(sub["id"])
    assert (view["status"], view["cycle"]) == ("active", 2) and balance(stk, cid) == 1010
    # the same payment again (a second webhook, a reconcile): nothing more
    d2 = zaprite.webhook(order["id"], "COMPLETE")
    stk.inbox.receive("zaprite", d2.body, d2.headers)
    for event in stk.providers.get("zaprite").settled_since(datetime(2000, 1, 1).astimezone()):
        stk.inbox.store_event("zaprite", event, json.dumps(dict(event.payload)).encode())
    stk.inbox.process()
    assert stk.subscriptions.get(sub["id"])["cycle"] == 2
    assert balance(stk, cid) == 1010 and payments(stk) == 1


def test_the_runtime_registers_the_configured_invoice_providers(
    db_url: str, clock: Any, btcpay: FakeBTCPay, zaprite: FakeZaprite
) -> None:
    settings = make_settings(
        db_url,
        btcpay_url=btcpay.url,
        btcpay_api_key=btcpay.api_key,
        btcpay_store_id=btcpay.store_id,
        btcpay_webhook_secret=btcpay.webhook_secret,
        zaprite_url=zaprite.url,
        zaprite_api_key=zaprite.api_key,
        stripe_webhook_secret="whsec_x",
    )
    with Tollkeep(settings, clock=clock) as tk:
        # the subscription's provider column chooses; Stripe bills its own (not an invoice provider)
        assert set(tk.subscriptions.providers) == {"manual", "btcpay", "zaprite"}
