"""The Stripe adapter: the real ``stripe`` SDK against a real fake Stripe (localstripe, behind our
fake of Checkout Sessions / Billing Portal / Meter Events), events signed by the SDK itself."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import stripe

from tests.factories import free_port
from tests.payments.fakes import stripe_server as _fakes
from tests.payments.fakes.stripe_server import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    StripeFake,
    charge_object,
    decode_form,
    event,
    invoice_object,
    sign,
    signed,
    subscription_object,
)
from tollkeep.catalog import DEFAULT_CATALOG_TEXT, Catalog, parse_catalog
from tollkeep.config import Settings
from tollkeep.payments.providers import Providers
from tollkeep.payments.providers.base import (
    CannotApply,
    CheckoutRequest,
    MalformedEvent,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    Provider,
    ProviderNotConfigured,
    ProviderUnavailable,
    ReconcileNotSupported,
    Recorded,
    SignatureInvalid,
    VerifiedEvent,
)
from tollkeep.payments.providers.stripe import HANDLED_TYPES, StripeProvider

# the fake's fixtures, used by name below
localstripe_url = _fakes.localstripe_url
stripe_fake = _fakes.stripe_fake
stripe_provider = _fakes.stripe_provider


def _catalog() -> Catalog:
    text = DEFAULT_CATALOG_TEXT.replace(
        "max_machines = 3\ntrial_days = 0", 'max_machines = 3\nstripe_price_id = "price_pro"\ntrial_days = 0'
    ).replace(
        "credits = 12000\nprices = { usd = 5000, eur = 5000 }",
        'credits = 12000\nprices = { usd = 5000, eur = 5000 }\nstripe_price_id = "price_builder"',
    )
    text += (
        '\n[plans.team]\nname = "Team"\nperiod = "month"\nprices = { usd = 9900 }\n'
        'stripe_price_id = "price_team"\nsuspend_keys_on_cancel = true\n'
    )
    assert text.count("price_pro") == 1 and text.count("price_builder") == 1
    return parse_catalog(text)


CATALOG = _catalog()


def _webhook_only() -> StripeProvider:
    return StripeProvider(None, WEBHOOK_SECRET)


def _verify(provider: StripeProvider, evt: dict[str, Any], **kw: Any) -> VerifiedEvent:
    body, headers = signed(evt, **kw)
    return provider.verify(body, headers)


def _checkout(
    *, pack: str | None = None, plan: str | None = None, checkout_id: str = "chk_1", amount: int = 500
) -> CheckoutRequest:
    return CheckoutRequest(
        checkout_id=checkout_id,
        customer_id="cus_ours_1",
        email="buyer@example.com",
        pack=CATALOG.pack(pack) if pack else None,
        plan=CATALOG.plan(plan) if plan else None,
        currency="usd",
        amount=amount,
        success_url="https://app.example.com/paid?claim=tok",
        cancel_url="https://app.example.com/cancelled",
    )


def _prices(fake: StripeFake) -> None:
    fake.add_price("price_builder", 5000)
    fake.add_price("price_pro", 2900, interval="month")
    fake.add_price("price_team", 9900, interval="month")


# ---- the protocol -------------------------------------------------------------------------------
def test_it_is_a_provider_and_says_what_it_handles() -> None:
    p = _webhook_only()
    assert isinstance(p, Provider)
    assert p.name == "stripe" and p.kept_headers == ("stripe-signature",)
    assert StripeProvider.handled_types == HANDLED_TYPES
    assert "checkout.session.completed" in HANDLED_TYPES and "customer.created" not in HANDLED_TYPES
    ev = _verify(p, event("customer.created", {"id": "cus_1", "object": "customer"}))
    assert p.interpret(ev, CATALOG) == [Recorded("ignored: customer.created")]


def test_from_settings() -> None:
    assert StripeProvider.from_settings(Settings()) is None
    only_hooks = StripeProvider.from_settings(Settings(stripe_webhook_secret=WEBHOOK_SECRET))
    assert only_hooks is not None and not only_hooks.has_api
    full = StripeProvider.from_settings(
        Settings(
            stripe_secret_key=SECRET_KEY,
            stripe_webhook_secret=WEBHOOK_SECRET,
            stripe_api_base="http://127.0.0.1:9/",
            stripe_webhook_tolerance_seconds=60,
            provider_timeout_seconds=2.5,
        )
    )
    assert full is not None and full.has_api
    assert (full.api_base, full.tolerance, full.timeout) == ("http://127.0.0.1:9", 60, 2.5)
    assert SECRET_KEY not in repr(full) and WEBHOOK_SECRET not in repr(full)
    # the server's registry finds it
    providers = Providers(Settings(stripe_secret_key=SECRET_KEY, stripe_webhook_secret=WEBHOOK_SECRET))
    assert isinstance(providers.get("stripe"), StripeProvider) and providers.default() == "stripe"


# ---- verification -------------------------------------------------------------------------------
def test_verify_accepts_a_signed_event() -> None:
    evt = event("invoice.paid", invoice_object(), created=1_700_000_000)
    ev = _verify(_webhook_only(), evt)
    assert ev.event_id == evt["id"] and ev.event_id.startswith("evt_")
    assert ev.type == "invoice.paid" and ev.payload == evt
    assert ev.occurred_at == datetime.fromtimestamp(1_700_000_000, UTC)
    # header names are case-insensitive
    body, headers = signed(evt)
    assert (
        _webhook_only().verify(body, {"stripe-signature": headers["Stripe-Signature"]}).event_id == evt["id"]
    )


@pytest.mark.parametrize(
    "case",
    ["forged_body", "wrong_secret", "stale", "future", "missing", "empty", "garbage", "no_v1", "binary"],
)
def test_verify_refuses(case: str) -> None:
    p = _webhook_only()
    body, headers = signed(event("charge.refunded", charge_object()))
    now = int(time.time())
    if case == "forged_body":
        body = body.replace(b'"amount": 500', b'"amount": 50000')
    elif case == "wrong_secret":
        headers["Stripe-Signature"] = sign(body, "whsec_someone_else")
    elif case == "stale":
        headers["Stripe-Signature"] = sign(body, timestamp=now - 301)
    elif case == "future":
        headers["Stripe-Signature"] = sign(body, timestamp=now + 301)
    elif case == "missing":
        del headers["Stripe-Signature"]
    elif case == "empty":
        headers["Stripe-Signature"] = ""
    elif case == "garbage":
        headers["Stripe-Signature"] = "t=abc,v1=zz"
    elif case == "no_v1":
        headers["Stripe-Signature"] = headers["Stripe-Signature"].replace("v1=", "v0=")
    elif case == "binary":
        body = b"\xff\xfe" + body
    with pytest.raises(SignatureInvalid) as err:
        p.verify(body, headers)
    assert err.value.status == 401 and err.value.code == "invalid_signature"
    assert WEBHOOK_SECRET not in err.value.message and "whsec_" not in err.value.message


def test_verify_tolerance_edges_and_setting() -> None:
    body, _ = signed(event("invoice.paid", invoice_object()))
    now = int(time.time())
    p = _webhook_only()
    assert p.verify(body, {"Stripe-Signature": sign(body, timestamp=now - 290)})
    assert p.verify(body, {"Stripe-Signature": sign(body, timestamp=now + 60)})  # clock skew
    strict = StripeProvider(None, WEBHOOK_SECRET, tolerance=30)
    with pytest.raises(SignatureInvalid, match="tolerance"):
        strict.verify(body, {"Stripe-Signature": sign(body, timestamp=now - 60)})


def test_verify_malformed_bodies_are_400() -> None:
    p = _webhook_only()
    for body in (b"not json at all", b"[1, 2]", json.dumps({"object": "event", "type": "x"}).encode()):
        with pytest.raises(MalformedEvent) as err:
            p.verify(body, {"Stripe-Signature": sign(body)})
        assert err.value.status == 400


def test_verify_without_a_webhook_secret_is_not_configured() -> None:
    body, headers = signed(event("invoice.paid", invoice_object()))
    with pytest.raises(ProviderNotConfigured):
        StripeProvider(SECRET_KEY, None).verify(body, headers)


# ---- checkout sessions: create, pay, webhook ----------------------------------------------------
def test_pack_checkout_sends_our_metadata_and_its_webhook_grants_the_pack(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    created = stripe_provider.create_checkout(_checkout(pack="starter"))
    assert created.provider_ref.startswith("cs_test_")
    assert created.url == f"https://checkout.stripe.com/c/pay/{created.provider_ref}"
    assert created.expires_at is not None and created.expires_at > datetime.now(UTC)
    (req,) = stripe_fake.seen("POST", "/v1/checkout/sessions")
    p = req.params
    meta = {"tollkeep_checkout": "chk_1", "tollkeep_customer": "cus_ours_1", "tollkeep_pack": "starter"}
    assert p["mode"] == "payment" and p["metadata"] == meta
    assert p["payment_intent_data"]["metadata"] == meta
    assert p["line_items"] == [
        {
            "price_data": {
                "currency": "usd",
                "unit_amount": "500",
                "product_data": {"name": "Starter pack", "description": "1,000 credits that never expire."},
            },
            "quantity": "1",
        }
    ]
    assert p["customer_email"] == "buyer@example.com" and p["client_reference_id"] == "chk_1"
    assert p["success_url"] == "https://app.example.com/paid?claim=tok"
    assert p["cancel_url"] == "https://app.example.com/cancelled"
    assert req.idempotency_key == "tollkeep-checkout-chk_1"

    session = stripe_fake.complete_session(created.provider_ref)
    ev = _verify(stripe_provider, event("checkout.session.completed", session))
    (action,) = stripe_provider.interpret(ev, CATALOG)
    assert isinstance(action, PaymentSettled)
    assert action.payment_id == session["payment_intent"] and action.payment_id.startswith("pi_")
    assert (action.pack, action.plan, action.amount, action.currency) == ("starter", None, 500, "usd")
    assert action.checkout_id == "chk_1" and action.renewal is False
    assert action.buyer.customer_id == "cus_ours_1"
    assert action.buyer.email == "buyer@example.com" and action.buyer.name == "Ada Buyer"
    assert action.buyer.external_ref == f"stripe:{session['customer']}"
    # the real SDK against localstripe: the customer and the paid PaymentIntent exist there
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_fake.url})
    assert client.v1.customers.retrieve(session["customer"]).email == "buyer@example.com"
    pi = client.v1.payment_intents.retrieve(session["payment_intent"])
    assert pi.status == "succeeded" and pi.metadata.to_dict() == meta


def test_pack_with_a_stripe_price_bills_that_price(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    _prices(stripe_fake)
    stripe_provider.create_checkout(_checkout(pack="builder", amount=5000))
    (req,) = stripe_fake.seen("POST", "/v1/checkout/sessions")
    assert req.params["line_items"] == [{"price": "price_builder", "quantity": "1"}]
    assert req.params["metadata"]["tollkeep_pack"] == "builder"


def test_plan_checkout_is_a_subscription_and_its_webhook_sets_the_plan(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    _prices(stripe_fake)
    created = stripe_provider.create_checkout(_checkout(plan="pro", checkout_id="chk_plan", amount=2900))
    (req,) = stripe_fake.seen("POST", "/v1/checkout/sessions")
    meta = {"tollkeep_checkout": "chk_plan", "tollkeep_customer": "cus_ours_1", "tollkeep_plan": "pro"}
    assert req.params["mode"] == "subscription"
    assert req.params["line_items"] == [{"price": "price_pro", "quantity": "1"}]
    assert req.params["metadata"] == meta and req.params["subscription_data"]["metadata"] == meta
    assert "payment_intent_data" not in req.params

    session = stripe_fake.complete_session(created.provider_ref)
    ev = _verify(stripe_provider, event("checkout.session.completed", session))
    (action,) = stripe_provider.interpret(ev, CATALOG)
    assert isinstance(action, PaymentSettled)
    assert action.payment_id == session["invoice"] and action.payment_id.startswith("in_")
    assert (action.plan, action.pack, action.amount) == ("pro", None, 2900)
    assert action.subscription_ref == session["subscription"]


def test_a_plan_without_a_stripe_price_cannot_be_bought(
    stripe_provider: StripeProvider, stripe_fake: StripeFake
) -> None:
    with pytest.raises(CannotApply) as err:
        stripe_provider.create_checkout(_checkout(plan="free", amount=0))
    assert err.value.code == "plan_not_purchasable" and err.value.status == 422
    assert stripe_fake.seen("POST", "/v1/checkout/sessions") == []


def test_the_same_checkout_twice_is_one_session(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    a = stripe_provider.create_checkout(_checkout(pack="starter", checkout_id="chk_same"))
    b = stripe_provider.create_checkout(_checkout(pack="starter", checkout_id="chk_same"))
    assert a.provider_ref == b.provider_ref and len(stripe_fake.sessions) == 1


def test_unpaid_and_asynchronous_sessions(stripe_fake: StripeFake, stripe_provider: StripeProvider) -> None:
    created = stripe_provider.create_checkout(_checkout(pack="starter"))
    pending = stripe_fake.complete_session(created.provider_ref, payment_status="unpaid")
    (rec,) = stripe_provider.interpret(
        _verify(stripe_provider, event("checkout.session.completed", pending)), CATALOG
    )
    assert isinstance(rec, Recorded) and "pending" in rec.note
    succeeded = {**pending, "payment_status": "paid", "payment_intent": "pi_test_async"}
    ev = _verify(stripe_provider, event("checkout.session.async_payment_succeeded", succeeded))
    (ok,) = stripe_provider.interpret(ev, CATALOG)
    assert isinstance(ok, PaymentSettled) and ok.payment_id == "pi_test_async" and ok.pack == "starter"
    ev = _verify(stripe_provider, event("checkout.session.async_payment_failed", succeeded))
    (failed,) = stripe_provider.interpret(ev, CATALOG)
    assert isinstance(failed, PaymentFailed) and failed.payment_id == "pi_test_async"
    assert failed.buyer.customer_id == "cus_ours_1" and failed.amount == 500


def test_session_metadata_the_catalog_lacks_cannot_apply() -> None:
    p = _webhook_only()
    base = {
        "id": "cs_test_x",
        "object": "checkout.session",
        "mode": "payment",
        "payment_status": "paid",
        "payment_intent": "pi_x",
        "amount_total": 500,
        "currency": "usd",
    }
    for key, value in (("tollkeep_pack", "nope"), ("tollkeep_plan", "gold")):
        s = {**base, "metadata": {"tollkeep_customer": "cus_1", key: value}}
        with pytest.raises(CannotApply, match=repr(value)):
            p.interpret(_verify(p, event("checkout.session.completed", s)), CATALOG)
    foreign = {**base, "metadata": {}}
    (rec,) = p.interpret(_verify(p, event("checkout.session.completed", foreign)), CATALOG)
    assert isinstance(rec, Recorded)
    # nothing to charge (a 100 % coupon): the session id is the payment id
    free = {
        **base,
        "payment_status": "no_payment_required",
        "payment_intent": None,
        "metadata": {"tollkeep_pack": "starter"},
    }
    (settled,) = p.interpret(_verify(p, event("checkout.session.completed", free)), CATALOG)
    assert isinstance(settled, PaymentSettled) and settled.payment_id == "cs_test_x"
    assert settled.buyer.customer_id is None


# ---- invoices -----------------------------------------------------------------------------------
def test_a_renewal_invoice_renews_the_plan() -> None:
    p = _webhook_only()
    inv = invoice_object(
        price_id="price_team", amount=9900, subscription_metadata={"tollkeep_customer": "cus_1"}
    )
    (a,) = p.interpret(_verify(p, event("invoice.paid", inv)), CATALOG)
    assert isinstance(a, PaymentSettled) and a.renewal is True
    assert (a.payment_id, a.plan, a.amount, a.currency) == (inv["id"], "team", 9900, "usd")
    assert a.subscription_ref == "sub_test_1" and a.buyer.customer_id == "cus_1"
    assert a.buyer.external_ref == "stripe:cus_test_buyer" and a.buyer.email == "buyer@example.com"


def test_renewal_plan_from_metadata_and_old_invoice_shapes() -> None:
    p = _webhook_only()
    unknown_price = invoice_object(price_id="price_legacy", subscription_metadata={"tollkeep_plan": "pro"})
    (a,) = p.interpret(_verify(p, event("invoice.paid", unknown_price)), CATALOG)
    assert isinstance(a, PaymentSettled) and a.plan == "pro"
    with pytest.raises(CannotApply, match="price_legacy"):
        p.interpret(_verify(p, event("invoice.paid", invoice_object(price_id="price_legacy"))), CATALOG)
    # before 2025-03-31: subscription at the top, lines carry a price object
    old = invoice_object()
    old.pop("parent")
    old["subscription"] = "sub_old"
    old["subscription_details"] = {"metadata": {"tollkeep_customer": "cus_9"}}
    old["lines"]["data"][0].pop("pricing")
    old["lines"]["data"][0]["price"] = {"id": "price_pro", "object": "price"}
    (b,) = p.interpret(_verify(p, event("invoice.paid", old)), CATALOG)
    assert isinstance(b, PaymentSettled) and (b.plan, b.subscription_ref, b.buyer.customer_id) == (
        "pro",
        "sub_old",
        "cus_9",
    )


def test_the_first_invoice_is_the_checkouts_and_failures_are_reported() -> None:
    p = _webhook_only()
    first = invoice_object(billing_reason="subscription_create")
    (rec,) = p.interpret(_verify(p, event("invoice.paid", first)), CATALOG)
    assert isinstance(rec, Recorded) and "subscription_create" in rec.note
    failed = invoice_object(
        status="open", attempt_count=2, subscription_metadata={"tollkeep_customer": "cus_1"}
    )
    (f,) = p.interpret(_verify(p, event("invoice.payment_failed", failed)), CATALOG)
    assert isinstance(f, PaymentFailed)
    assert (f.payment_id, f.amount, f.currency, f.buyer.customer_id) == (failed["id"], 2900, "usd", "cus_1")
    assert f.reason is not None and "attempt 2" in f.reason


# ---- subscriptions ------------------------------------------------------------------------------
def test_subscription_updated() -> None:
    p = _webhook_only()
    md = {"tollkeep_customer": "cus_1", "tollkeep_plan": "pro"}
    switched = subscription_object(price_id="price_team", metadata=md)
    evt = event("customer.subscription.updated", switched, previous_attributes={"items": {"data": []}})
    (a,) = p.interpret(_verify(p, evt), CATALOG)
    # the subscription's id, so the local subscription Stripe bills follows the move
    assert a == PlanChanged(ref=evt["id"], buyer=a.buyer, plan="team", subscription_ref=switched["id"])
    assert a.buyer.customer_id == "cus_1"
    # scheduling a cancellation keeps the plan until customer.subscription.deleted
    sched = subscription_object(price_id="price_pro", metadata=md, cancel_at_period_end=True)
    evt = event("customer.subscription.updated", sched, previous_attributes={"cancel_at_period_end": False})
    (r,) = p.interpret(_verify(p, evt), CATALOG)
    assert isinstance(r, Recorded) and "scheduled" in r.note
    for status, prev in (("past_due", {"status": "active"}), ("canceled", {"status": "active"})):
        evt = event(
            "customer.subscription.updated", subscription_object(status=status), previous_attributes=prev
        )
        (r,) = p.interpret(_verify(p, evt), CATALOG)
        assert isinstance(r, Recorded)
    # a price the catalog does not know: the metadata names what was bought, not what it became
    unknown = subscription_object(price_id="price_enterprise", metadata=md)
    evt = event("customer.subscription.updated", unknown, previous_attributes={"items": {}})
    with pytest.raises(CannotApply, match="price_enterprise"):
        p.interpret(_verify(p, evt), CATALOG)


def test_subscription_deleted_ends_the_plan() -> None:
    p = _webhook_only()
    sub = subscription_object(
        price_id="price_team", status="canceled", metadata={"tollkeep_customer": "cus_1"}
    )
    (a,) = p.interpret(_verify(p, event("customer.subscription.deleted", sub)), CATALOG)
    assert isinstance(a, PlanCancelled)
    assert (a.ref, a.plan, a.effective_at, a.buyer.customer_id) == (
        f"{sub['id']}:cancelled",
        "team",
        None,
        "cus_1",
    )
    assert CATALOG.plan("team").suspend_keys_on_cancel  # type: ignore[union-attr]
    # a replay of the ending under another event id is the same cancellation
    (b,) = p.interpret(_verify(p, event("customer.subscription.deleted", sub)), CATALOG)
    assert b == a


# ---- refunds ------------------------------------------------------------------------------------
def test_partial_refunds_without_a_refund_list_are_distinct_and_idempotent() -> None:
    p = _webhook_only()
    ev1 = event(
        "charge.refunded",
        charge_object(charge_id="ch_1", amount=500, amount_refunded=200),
        previous_attributes={"amount_refunded": 0, "refunded": False},
    )
    ev2 = event(
        "charge.refunded",
        charge_object(charge_id="ch_1", amount=500, amount_refunded=500),
        previous_attributes={"amount_refunded": 200, "refunded": False},
    )
    (a,) = p.interpret(_verify(p, ev1), CATALOG)
    (b,) = p.interpret(_verify(p, ev2), CATALOG)
    assert isinstance(a, PaymentRefunded) and isinstance(b, PaymentRefunded)
    assert (a.payment_id, a.refund_id, a.amount, a.total) == ("pi_test_1", "ch_1:200", 200, 500)
    assert (b.payment_id, b.refund_id, b.amount, b.total) == ("pi_test_1", "ch_1:500", 300, 500)
    assert p.interpret(_verify(p, ev1), CATALOG) == [a]  # reprocessing: the same refund id
    assert a.buyer.external_ref == "stripe:cus_test_buyer"


def test_embedded_refund_lists_give_one_action_per_refund() -> None:
    p = _webhook_only()
    refunds = [
        {
            "id": "re_2",
            "object": "refund",
            "amount": 300,
            "currency": "usd",
            "status": "succeeded",
            "created": 20,
        },
        {
            "id": "re_1",
            "object": "refund",
            "amount": 200,
            "currency": "usd",
            "status": "succeeded",
            "created": 10,
        },
        {
            "id": "re_x",
            "object": "refund",
            "amount": 50,
            "currency": "usd",
            "status": "failed",
            "created": 30,
        },
    ]
    ch = charge_object(amount=500, amount_refunded=500, refunds=refunds)
    ch["invoice"] = "in_first"  # API versions that name the invoice: the plan payment's id
    actions = p.interpret(_verify(p, event("charge.refunded", ch)), CATALOG)
    assert [(a.refund_id, a.amount, a.payment_id) for a in actions] == [
        ("re_1", 200, "in_first"),
        ("re_2", 300, "in_first"),
    ]


def test_refunds_are_listed_through_the_api_when_not_embedded(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    created = stripe_provider.create_checkout(_checkout(pack="starter"))
    session = stripe_fake.complete_session(created.provider_ref)
    (settled,) = stripe_provider.interpret(
        _verify(stripe_provider, event("checkout.session.completed", session)), CATALOG
    )
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_fake.url})
    r1 = client.v1.refunds.create({"payment_intent": session["payment_intent"], "amount": 100})
    charge = client.v1.charges.retrieve(str(r1.charge)).to_dict()
    charge.pop("refunds", None)  # current API versions do not embed them
    ev1 = _verify(
        stripe_provider, event("charge.refunded", charge, previous_attributes={"amount_refunded": 0})
    )
    (a,) = stripe_provider.interpret(ev1, CATALOG)
    assert isinstance(a, PaymentRefunded) and isinstance(settled, PaymentSettled)
    assert (a.payment_id, a.refund_id, a.amount, a.total) == (settled.payment_id, r1.id, 100, 500)
    r2 = client.v1.refunds.create({"payment_intent": session["payment_intent"], "amount": 150})
    # the first event processed late (after the second refund) and the second: each refund once
    late = stripe_provider.interpret(ev1, CATALOG)
    assert {(x.refund_id, x.amount) for x in late} == {(r1.id, 100), (r2.id, 150)}
    listed = [r for r in stripe_fake.seen("GET", "/v1/refunds") if r.served_by == "localstripe"]
    assert listed and listed[0].params["charge"] == charge["id"]


def test_a_plan_payment_refund_names_the_invoice(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    _prices(stripe_fake)
    created = stripe_provider.create_checkout(_checkout(plan="pro", checkout_id="chk_sub", amount=2900))
    session = stripe_fake.complete_session(created.provider_ref)
    (settled,) = stripe_provider.interpret(
        _verify(stripe_provider, event("checkout.session.completed", session)), CATALOG
    )
    pi = stripe_fake.sessions[session["id"]]["_first_payment_intent"]
    client = stripe.StripeClient(SECRET_KEY, base_addresses={"api": stripe_fake.url})
    refund = client.v1.refunds.create({"payment_intent": pi, "amount": 900})
    charge = client.v1.charges.retrieve(str(refund.charge)).to_dict()
    for gone in ("invoice", "refunds"):  # the current shape of a charge
        charge.pop(gone, None)
    (a,) = stripe_provider.interpret(_verify(stripe_provider, event("charge.refunded", charge)), CATALOG)
    assert isinstance(a, PaymentRefunded) and isinstance(settled, PaymentSettled)
    assert (a.payment_id, a.refund_id, a.amount, a.total) == (session["invoice"], refund.id, 900, 2900)
    assert a.payment_id == settled.payment_id
    (lookup,) = stripe_fake.seen("GET", "/v1/invoice_payments")
    assert lookup.params["payment"] == {"type": "payment_intent", "payment_intent": pi}


# ---- API failures -------------------------------------------------------------------------------
def test_provider_down_is_provider_unavailable(stripe_fake: StripeFake) -> None:
    down = StripeProvider(
        SECRET_KEY,
        WEBHOOK_SECRET,
        api_base=f"http://127.0.0.1:{free_port()}",
        timeout=2,
        max_network_retries=0,
    )
    with pytest.raises(ProviderUnavailable) as err:
        down.create_checkout(_checkout(pack="starter"))
    assert err.value.status == 502 and err.value.code == "provider_unavailable"
    assert "could not be reached" in err.value.message and SECRET_KEY not in err.value.message

    flaky = StripeProvider(SECRET_KEY, WEBHOOK_SECRET, api_base=stripe_fake.url, max_network_retries=0)
    stripe_fake.fail_next(1, status=500)
    with pytest.raises(ProviderUnavailable, match="HTTP 500"):
        flaky.create_checkout(_checkout(pack="starter"))
    # the SDK retries (same idempotency key) when allowed to
    retrying = StripeProvider(SECRET_KEY, WEBHOOK_SECRET, api_base=stripe_fake.url, max_network_retries=1)
    stripe_fake.fail_next(1, status=500)
    assert retrying.create_checkout(_checkout(pack="starter", checkout_id="chk_retry")).url


def test_a_rejected_key_is_distinguishable_and_not_echoed(stripe_fake: StripeFake) -> None:
    stripe_fake.require_key = "sk_test_the_real_one"
    p = StripeProvider(SECRET_KEY, WEBHOOK_SECRET, api_base=stripe_fake.url, max_network_retries=0)
    with pytest.raises(ProviderUnavailable) as err:
        p.create_checkout(_checkout(pack="starter"))
    assert "authentication failed" in err.value.message and err.value.details["reason"] == "authentication"
    assert SECRET_KEY not in err.value.message and SECRET_KEY not in str(err.value.to_dict())


def test_bad_request_names_stripes_reason(stripe_fake: StripeFake, stripe_provider: StripeProvider) -> None:
    with pytest.raises(ProviderUnavailable, match="No such price: 'price_builder'"):
        stripe_provider.create_checkout(_checkout(pack="builder"))  # the price is not in this account


def test_webhook_only_configuration_has_no_api() -> None:
    p = _webhook_only()
    for call in (
        lambda: p.create_checkout(_checkout(pack="starter")),
        lambda: p.portal_url("cus_1", "https://app.example.com"),
        lambda: p.report_meter_event("tokens", "cus_1", 5, "ev_1"),
    ):
        with pytest.raises(ProviderNotConfigured):
            call()
    with pytest.raises(ReconcileNotSupported):
        p.settled_since(datetime.now(UTC))


# ---- portal, reconcile, meter events ------------------------------------------------------------
def test_portal_url(stripe_fake: StripeFake, stripe_provider: StripeProvider) -> None:
    url = stripe_provider.portal_url("stripe:cus_test_42", "https://app.example.com/account")
    assert url.startswith("https://billing.stripe.com/p/session/")
    (req,) = stripe_fake.seen("POST", "/v1/billing_portal/sessions")
    assert req.params == {"customer": "cus_test_42", "return_url": "https://app.example.com/account"}


def test_reconcile_yields_the_webhooks_payment_ids(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    _prices(stripe_fake)
    since = datetime.now(UTC) - timedelta(minutes=1)
    webhook_ids: set[str] = set()
    for i, (pack, plan) in enumerate((("starter", None), (None, "pro"), ("starter", None))):
        c = stripe_provider.create_checkout(_checkout(pack=pack, plan=plan, checkout_id=f"chk_r{i}"))
        s = stripe_fake.complete_session(c.provider_ref)
        (a,) = stripe_provider.interpret(
            _verify(stripe_provider, event("checkout.session.completed", s)), CATALOG
        )
        webhook_ids.add(a.payment_id)
    stripe_provider.create_checkout(_checkout(pack="starter", checkout_id="chk_open"))  # never paid
    c = stripe_provider.create_checkout(_checkout(pack="starter", checkout_id="chk_unpaid"))
    stripe_fake.complete_session(c.provider_ref, payment_status="unpaid")
    renewal = invoice_object(subscription_metadata={"tollkeep_customer": "cus_1"})
    stripe_fake.add_invoice(renewal)
    (r,) = stripe_provider.interpret(_verify(stripe_provider, event("invoice.paid", renewal)), CATALOG)
    webhook_ids.add(r.payment_id)
    stripe_fake.add_invoice(invoice_object(billing_reason="subscription_create"))
    stripe_fake.add_invoice(invoice_object(created=int(since.timestamp()) - 3600))  # before `since`

    stripe_provider.page_size = 2  # pagination: several pages of each
    events = stripe_provider.settled_since(since)
    assert all(e.event_id == f"reconcile:{e.payload['data']['object']['id']}" for e in events)
    assert sorted(e.type for e in events) == ["checkout.session.completed"] * 3 + ["invoice.paid"]
    reconciled = {a.payment_id for e in events for a in stripe_provider.interpret(e, CATALOG)}
    assert reconciled == webhook_ids
    pages = stripe_fake.seen("GET", "/v1/checkout/sessions")
    assert len(pages) >= 2 and pages[0].params["status"] == "complete"
    assert pages[0].params["created"] == {"gte": str(int(since.timestamp()))}
    assert any("starting_after" in r.params for r in pages)


def test_meter_events_are_deduplicated_on_our_identifier(
    stripe_fake: StripeFake, stripe_provider: StripeProvider
) -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    for _ in range(2):
        stripe_provider.report_meter_event("ai_tokens", "stripe:cus_test_9", 25, "ev_0001", at)
    stripe_provider.report_meter_event("ai_tokens", "cus_test_9", 5, "ev_0002")
    assert set(stripe_fake.meter_events) == {"ev_0001", "ev_0002"}
    first = stripe_fake.meter_events["ev_0001"]
    assert first["payload"] == {"stripe_customer_id": "cus_test_9", "value": "25"}
    assert first["timestamp"] == int(at.timestamp()) and first["event_name"] == "ai_tokens"
    keys = [r.idempotency_key for r in stripe_fake.seen("POST", "/v1/billing/meter_events")]
    assert keys == ["tollkeep-meter-ev_0001", "tollkeep-meter-ev_0001", "tollkeep-meter-ev_0002"]


def test_decode_form_round_trips_the_sdks_encoding() -> None:
    assert decode_form("a[b][0][c]=1&a[b][1][c]=2&x=&m[k]=v") == {
        "a": {"b": [{"c": "1"}, {"c": "2"}]},
        "x": "",
        "m": {"k": "v"},
    }
