"""A plan bought through Stripe Checkout (subscription mode) is followed by a local subscription
(provider ``stripe``, keyed by the Stripe subscription id): Stripe's paid cycle invoices renew it
(one local invoice per cycle, the allowance granted once per cycle: a duplicate, a reconcile or
an early second invoice never grants again), a failed payment makes it past_due, a pause pauses
it, the end cancels it; the renewal worker never invoices it. Webhooks are signed by the SDK's
own helper and go through the real inbox and applier."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_settings
from tests.payments.fakes.stripe_server import (
    WEBHOOK_SECRET,
    event,
    invoice_object,
    sign,
    signed,
    subscription_object,
)
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import Conflict
from tollkeep.payments.providers.base import SignatureInvalid
from tollkeep.payments.providers.stripe import StripeProvider
from tollkeep.runtime import Tollkeep

CATALOG = """
version = "stripe-subs"
default_plan = "free"

[credits]
unit = "credit"
per_credit = 1

[meters.api_call]
aggregation = "count"
unit = "call"

[meters.api_call.price]
model = "flat"
amount = 1

[plans.free]
name = "Free"

[plans.free.allowance]
amount = 10
period = "lifetime"

[plans.pro]
name = "Pro"
period = "month"
grace_days = 3
stripe_price_id = "price_pro"
suspend_keys_on_cancel = true
license = true

[plans.pro.prices]
usd = 2900

[plans.pro.allowance]
amount = 1000
period = "month"

[plans.team]
name = "Team"
period = "month"
stripe_price_id = "price_team"

[plans.team.prices]
usd = 9900

[plans.team.allowance]
amount = 5000
period = "month"
"""

SUB = "sub_test_followed"


@pytest.fixture
def stk(db_url: str, clock: FrozenClock, tmp_path: Path) -> Iterator[Tollkeep]:
    path = tmp_path / "tollkeep.toml"
    path.write_text(CATALOG)
    runtime = Tollkeep(make_settings(db_url, catalog_path=str(path), test_clock=True), clock=clock)
    runtime.providers.register(StripeProvider(None, WEBHOOK_SECRET))
    try:
        yield runtime
        report = runtime.verify()
        assert report.ok, report.problems
    finally:
        runtime.close()


def deliver(tk: Tollkeep, evt: dict[str, Any]) -> dict[str, int]:
    body, headers = signed(evt)
    tk.inbox.receive("stripe", body, headers)
    return tk.inbox.process()


def session(cid: str) -> dict[str, Any]:
    return {
        "id": "cs_test_followed",
        "object": "checkout.session",
        "mode": "subscription",
        "status": "complete",
        "payment_status": "paid",
        "subscription": SUB,
        "invoice": "in_first_followed",
        "customer": "cus_test_buyer",
        "customer_details": {"email": "buyer@example.com", "name": "Ada Buyer"},
        "amount_total": 2900,
        "currency": "usd",
        "metadata": {"tollkeep_plan": "pro", "tollkeep_customer": cid},
    }


def cycle_invoice(cid: str, start: datetime, *, invoice_id: str) -> dict[str, Any]:
    inv = invoice_object(
        invoice_id=invoice_id, subscription=SUB, subscription_metadata={"tollkeep_customer": cid}
    )
    end = start + timedelta(days=30)
    inv["lines"]["data"][0]["period"] = {"start": int(start.timestamp()), "end": int(end.timestamp())}
    return inv


def sub_event(kind: str, cid: str, prev: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    obj = subscription_object(sub_id=SUB, metadata={"tollkeep_customer": cid}, **fields)
    return event(kind, obj, previous_attributes=prev)


def at(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def followed(tk: Tollkeep, cid: str) -> dict[str, Any]:
    [sub] = tk.subscriptions.list_subscriptions(customer_id=cid)
    return sub


def test_a_stripe_subscription_is_followed_and_each_cycle_grants_once(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("buyer")["id"])
    for _ in range(2):  # a second delivery of the same checkout (another event id): one subscription
        assert deliver(stk, event("checkout.session.completed", session(cid))) == {"processed": 1}
    sub = followed(stk, cid)
    assert (sub["provider"], sub["provider_ref"], sub["status"], sub["cycle"]) == ("stripe", SUB, "active", 1)
    assert stk.customers.get(cid)["plan"] == "pro"
    assert stk.balance(cid)["balance"] == 1000 + 10  # cycle 1's allowance, the free one carried over

    # the renewal worker only follows: past the period end and the grace, nothing is invoiced here
    stk.advance_test_clock(40 * 86400)
    sub = followed(stk, cid)
    assert (sub["status"], sub["cycle"], sub["open_invoice"]) == ("active", 1, None)
    assert stk.subscriptions.invoices(sub["id"]) == []
    assert stk.balance(cid)["balance"] == 10  # cycle 1 is over; cycle 2 is not paid yet

    start2 = at(sub["current_period_end"])
    paid = cycle_invoice(cid, start2, invoice_id="in_cycle_2")
    assert deliver(stk, event("invoice.paid", paid)) == {"processed": 1}
    sub = followed(stk, cid)
    assert (sub["status"], sub["cycle"], at(sub["current_period_start"])) == ("active", 2, start2)
    [inv] = stk.subscriptions.invoices(sub["id"])
    assert (inv["cycle"], inv["status"], inv["provider_invoice_ref"], inv["amount"]) == (
        2,
        "paid",
        "in_cycle_2",
        2900,
    )
    assert stk.balance(cid)["balance"] == 1010

    # the same invoice again (Stripe's retry under another event id, a reconcile) and an early second
    # invoice for the same period: no second cycle, no second allowance
    deliver(stk, event("invoice.paid", paid, event_id="reconcile:in_cycle_2"))
    deliver(stk, event("invoice.paid", cycle_invoice(cid, start2, invoice_id="in_cycle_2_again")))
    sub = followed(stk, cid)
    assert sub["cycle"] == 2 and len(stk.subscriptions.invoices(sub["id"])) == 1
    assert stk.balance(cid)["balance"] == 1010
    assert len(stk.payments.list_payments(provider="stripe")["data"]) == 3  # the money is recorded

    # a failed payment: past_due (the customer keeps the plan while Stripe retries)
    failed = invoice_object(
        invoice_id="in_cycle_3",
        subscription=SUB,
        status="open",
        subscription_metadata={"tollkeep_customer": cid},
    )
    deliver(stk, event("invoice.payment_failed", failed))
    assert followed(stk, cid)["status"] == "past_due" and stk.customers.get(cid)["plan"] == "pro"
    # then paid: cycle 3
    start3 = at(followed(stk, cid)["current_period_end"])
    deliver(stk, event("invoice.paid", cycle_invoice(cid, start3, invoice_id="in_cycle_3")))
    sub = followed(stk, cid)
    assert (sub["status"], sub["cycle"]) == ("active", 3)

    # Stripe ends it: canceled, back on the free plan, keys suspended (the plan says so)
    key = stk.keys.create(cid)
    deliver(stk, sub_event("customer.subscription.deleted", cid, status="canceled"))
    assert followed(stk, cid)["status"] == "canceled" and stk.customers.get(cid)["plan"] == "free"
    assert stk.keys.get(key["id"])["status"] == "suspended"
    # a late cycle invoice of a canceled subscription: recorded, nothing granted
    before = stk.balance(cid)["balance"]
    start4 = at(followed(stk, cid)["current_period_end"])
    deliver(stk, event("invoice.paid", cycle_invoice(cid, start4, invoice_id="in_cycle_4")))
    assert followed(stk, cid)["cycle"] == 3 and stk.balance(cid)["balance"] == before


def test_a_stripe_subscription_comes_with_one_licence_that_follows_its_cycles(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("licensed")["id"])
    for _ in range(2):
        deliver(stk, event("checkout.session.completed", session(cid)))
    sub = followed(stk, cid)
    [lic] = stk.licenses.list(customer_id=cid)
    assert lic["plan"] == "pro" and lic["status"] == "active"
    first_expiry = at(lic["expires_at"])
    assert first_expiry == at(sub["current_period_end"]) + timedelta(days=3)  # period end + grace
    start2 = at(sub["current_period_end"])
    deliver(stk, event("invoice.paid", cycle_invoice(cid, start2, invoice_id="in_lic_2")))
    [lic2] = stk.licenses.list(customer_id=cid)
    assert lic2["id"] == lic["id"] and at(lic2["expires_at"]) > first_expiry
    deliver(stk, sub_event("customer.subscription.deleted", cid, status="canceled"))
    [lic3] = stk.licenses.list(customer_id=cid)
    assert lic3["id"] == lic["id"] and at(lic3["expires_at"]) <= stk.clock.now()


def test_a_local_upgrade_of_a_stripe_subscription_is_refused_and_writes_nothing(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("portal-only")["id"])
    deliver(stk, event("checkout.session.completed", session(cid)))
    sub = followed(stk, cid)
    for attempt in (stk.subscriptions.changes.quote, stk.subscriptions.changes.upgrade):
        with pytest.raises(Conflict) as err:
            attempt(cid, "team")
        assert err.value.code == "provider_managed"
    assert stk.subscriptions.invoices(sub["id"]) == []
    assert followed(stk, cid)["plan"] == "pro" and stk.customers.get(cid)["plan"] == "pro"


def test_stripe_pause_collection_pauses_and_resumes(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("buyer")["id"])
    deliver(stk, event("checkout.session.completed", session(cid)))
    paused = {"behavior": "void", "resumes_at": None}
    deliver(
        stk,
        sub_event("customer.subscription.updated", cid, prev={"pause_collection": None}),
    )
    assert followed(stk, cid)["status"] == "active"  # cleared while not paused: nothing
    evt = sub_event("customer.subscription.updated", cid, prev={"pause_collection": None})
    evt["data"]["object"]["pause_collection"] = paused
    deliver(stk, evt)
    sub = followed(stk, cid)
    assert sub["status"] == "paused" and stk.customers.get(cid)["plan"] == "free"
    deliver(stk, evt | {"id": "evt_again"})  # a replay under another id: still paused, once
    assert followed(stk, cid)["status"] == "paused"
    stk.advance_test_clock(60 * 86400)  # not renewed, not lapsed
    assert followed(stk, cid)["status"] == "paused"
    low = stk.balance(cid)["balance"]
    deliver(stk, sub_event("customer.subscription.updated", cid, prev={"pause_collection": paused}))
    sub = followed(stk, cid)
    assert (sub["status"], sub["cycle"]) == ("past_due", 1) and stk.customers.get(cid)["plan"] == "pro"
    before = stk.balance(cid)["balance"]
    assert before == low  # resumed: nothing granted until Stripe's next cycle is paid
    deliver(stk, event("invoice.paid", cycle_invoice(cid, stk.clock.now(), invoice_id="in_after_resume")))
    sub = followed(stk, cid)
    assert (sub["status"], sub["cycle"]) == ("active", 2)
    assert stk.balance(cid)["balance"] == before + 1000
    # Stripe's own paused / resumed events map to the same
    deliver(stk, sub_event("customer.subscription.paused", cid, status="paused"))
    assert followed(stk, cid)["status"] == "paused"
    deliver(stk, sub_event("customer.subscription.resumed", cid))
    assert followed(stk, cid)["status"] == "past_due"


def test_a_forged_stripe_webhook_is_refused_and_changes_nothing(stk: Tollkeep) -> None:
    cid = str(stk.customers.create("buyer")["id"])
    body, headers = signed(event("checkout.session.completed", session(cid)))
    with pytest.raises(SignatureInvalid):
        stk.inbox.receive("stripe", body, {**headers, "Stripe-Signature": sign(body, "whsec_not_ours")})
    assert stk.inbox.process() == {}
    assert stk.subscriptions.list_subscriptions(customer_id=cid) == []


def test_a_plan_switch_in_stripe_moves_the_followed_subscription_and_its_cycle_allowance(
    stk: Tollkeep,
) -> None:
    cid = str(stk.customers.create("buyer")["id"])
    deliver(stk, event("checkout.session.completed", session(cid)))
    stk.advance_test_clock(10 * 86400)
    switched = sub_event(
        "customer.subscription.updated", cid, prev={"items": {"data": []}}, price_id="price_team"
    )
    assert deliver(stk, switched) == {"processed": 1}
    sub = followed(stk, cid)
    assert (sub["plan"], sub["cycle"]) == ("team", 1) and stk.customers.get(cid)["plan"] == "team"
    # pro's allowance closed, team's granted for the rest of this cycle (keyed by the cycle)
    assert stk.balance(cid)["balance"] == 10 + 5000
    start2 = at(sub["current_period_end"])
    # the team allowance lasts to the cycle's end (not a calendar month's, after which a second
    # one would be granted for the same cycle)
    [team] = [g for g in stk.balance(cid)["grants"] if g["remaining"] == 5000]
    assert at(team["expires_at"]) == start2
    stk.advance_test_clock(int((start2 - stk.clock.now()).total_seconds()) + 60)
    inv = cycle_invoice(cid, start2, invoice_id="in_team_2")
    inv["lines"]["data"][0]["pricing"]["price_details"]["price"] = "price_team"
    deliver(stk, event("invoice.paid", inv))
    deliver(stk, event("invoice.paid", inv, event_id="reconcile:in_team_2"))
    assert followed(stk, cid)["cycle"] == 2
    assert stk.balance(cid)["balance"] == 10 + 5000  # cycle 1's ended, cycle 2's granted once
