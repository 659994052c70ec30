"""Stripe, through the official ``stripe`` SDK (one :class:`stripe.StripeClient` per provider, never
the SDK's global ``stripe.api_key``: several runtimes in one process do not clash).

What it does (docs/payments-stripe.md has the operator's side):

- ``verify``: ``Stripe-Signature`` checked with the SDK (:class:`stripe.WebhookSignature`), the
  timestamp within ``tolerance`` seconds (300) of now, in the past and in the future.
- ``interpret``: ``checkout.session.completed`` / ``.async_payment_succeeded`` /
  ``.async_payment_failed``, ``invoice.paid`` (renewals), ``invoice.payment_failed``,
  ``customer.subscription.updated`` / ``.deleted`` / ``.paused`` / ``.resumed`` (and
  ``pause_collection`` set or cleared in ``.updated``), ``charge.refunded``. A plan bought in
  ``subscription`` mode is followed by a local subscription (provider ``stripe``, keyed by the
  Stripe subscription id): the actions carry ``subscription_ref``, paid cycles their period. Anything else is
  ``Recorded("ignored: <type>")``; :attr:`StripeProvider.handled_types` lists what is handled.
- ``create_checkout``: a Checkout Session (``payment`` mode for a pack, ``subscription`` mode for a
  plan) carrying our checkout id, customer and pack/plan in its metadata, and in the payment
  intent's / subscription's metadata.
- ``portal_url``: a Billing Portal session for a Stripe customer.
- ``settled_since``: complete Checkout Sessions and paid renewal invoices, shaped like the webhook.
- ``report_meter_event``: a Billing Meter Event, deduplicated by Stripe on our ``identifier``.

The payment id rule (the same id comes from the webhook, from a refund and from reconcile):

- a pack (``payment`` mode): the session's PaymentIntent id (``pi_…``) - what ``charge.refunded``
  carries as ``payment_intent``;
- a plan (``subscription`` mode): the subscription's first invoice id (``in_…``, the session's
  ``invoice``), renewals their own invoice id; a refunded charge is mapped to the invoice it paid
  (its ``invoice`` field in API versions before 2025-03-31, else the InvoicePayments API, which
  needs the secret key), else to its PaymentIntent;
- otherwise (nothing was charged: a 100 % coupon, a trial) the Checkout Session id (``cs_…``).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import stripe

from tollkeep.catalog import Catalog, Plan
from tollkeep.payments.providers.base import (
    META_CHECKOUT,
    META_CUSTOMER,
    META_INVOICE,
    META_PACK,
    META_PLAN,
    Action,
    Buyer,
    CannotApply,
    CheckoutCreated,
    CheckoutRequest,
    MalformedEvent,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    ProviderNotConfigured,
    ProviderUnavailable,
    ReconcileNotSupported,
    Recorded,
    SignatureInvalid,
    SubscriptionPaused,
    VerifiedEvent,
    lower_headers,
)

if TYPE_CHECKING:
    from tollkeep.config import Settings

__all__ = ["HANDLED_TYPES", "StripeProvider", "from_settings", "payment_id_of_session"]

T = TypeVar("T")

HANDLED_TYPES: frozenset[str] = frozenset(
    {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "invoice.paid",
        "invoice.payment_failed",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.paused",
        "customer.subscription.resumed",
        "charge.refunded",
    }
)

_PAID = ("paid", "no_payment_required")
_SECRETISH = re.compile(r"\b(sk|rk|whsec)_[A-Za-z0-9_*]+")


# ---- reading Stripe objects (plain dicts: the webhook's JSON or an SDK object's to_dict()) ------
def _id(value: Any) -> str | None:
    """An expandable field: the id string, or the id of the expanded object."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _metadata(*objs: Mapping[str, Any]) -> dict[str, str]:
    """The metadata of several objects merged (later ones win), empty values dropped."""
    out: dict[str, str] = {}
    for obj in objs:
        for k, v in _dict(obj.get("metadata")).items():
            if isinstance(v, str) and v:
                out[k] = v
    return out


def _when(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and value > 0 else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _currency(value: Any) -> str | None:
    return value.lower() if isinstance(value, str) and value else None


def _buyer(obj: Mapping[str, Any], metadata: Mapping[str, str]) -> Buyer:
    details = _dict(obj.get("customer_details")) or _dict(obj.get("billing_details"))
    email = details.get("email") or obj.get("customer_email") or obj.get("receipt_email")
    name = details.get("name") or obj.get("customer_name")
    cus = _id(obj.get("customer"))
    return Buyer(
        customer_id=metadata.get(META_CUSTOMER),
        email=email if isinstance(email, str) and email else None,
        external_ref=f"stripe:{cus}" if cus else None,
        name=name if isinstance(name, str) and name else None,
    )


def payment_id_of_session(session: Mapping[str, Any]) -> str:
    """The payment id of a Checkout Session (see the module's rule): its PaymentIntent in payment
    mode, else the subscription's first invoice, else the session id."""
    if session.get("mode") == "payment":
        pi = _id(session.get("payment_intent"))
        if pi:
            return pi
    invoice = _id(session.get("invoice"))
    if invoice:
        return invoice
    return str(session["id"])


def _price_of_item(item: Mapping[str, Any]) -> str | None:
    """A subscription item's or an invoice line's price id, in old and new API shapes."""
    price = _id(item.get("price"))
    if price:
        return price
    pricing = _dict(item.get("pricing"))  # invoice lines since 2025-03-31.basil
    price = _id(_dict(pricing.get("price_details")).get("price"))
    if price:
        return price
    return _id(item.get("plan"))  # the legacy Plans API


def _subscription_price(sub: Mapping[str, Any]) -> str | None:
    for item in _dict(sub.get("items")).get("data") or ():
        price = _price_of_item(_dict(item))
        if price:
            return price
    return None


def _invoice_subscription(inv: Mapping[str, Any]) -> tuple[str | None, Mapping[str, Any]]:
    """(subscription id, the subscription's metadata snapshot) of an invoice, in old and new
    (``parent.subscription_details``) API shapes."""
    details = _dict(_dict(inv.get("parent")).get("subscription_details")) or _dict(
        inv.get("subscription_details")
    )
    sub = _id(details.get("subscription")) or _id(inv.get("subscription"))
    return sub, details


def _invoice_period(inv: Mapping[str, Any]) -> tuple[datetime | None, datetime | None]:
    """The period a subscription invoice bills: its (first subscription) line's ``period``."""
    for line in _dict(inv.get("lines")).get("data") or ():
        period = _dict(_dict(line).get("period"))
        start, end = _when(period.get("start")), _when(period.get("end"))
        if start is not None and end is not None and end > start:
            return start, end
    return None, None  # the invoice's own period_start/end is the period before (usage)


def _invoice_price(inv: Mapping[str, Any]) -> str | None:
    for line in _dict(inv.get("lines")).get("data") or ():
        price = _price_of_item(_dict(line))
        if price:
            return price
    return None


def _redact(message: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            message = message.replace(secret, "[redacted]")
    return _SECRETISH.sub("[redacted]", message)


class StripeProvider:
    """The Stripe adapter. ``secret_key`` None: webhooks are verified and interpreted (without
    API look-ups) but checkouts, the portal and meter events raise :class:`ProviderNotConfigured`
    and reconcile :class:`ReconcileNotSupported`; ``webhook_secret`` None: ``verify`` raises
    :class:`ProviderNotConfigured`."""

    name: ClassVar[str] = "stripe"
    kept_headers: ClassVar[tuple[str, ...]] = ("stripe-signature",)
    handled_types: ClassVar[frozenset[str]] = HANDLED_TYPES
    page_size: int = 100  # objects per list request (reconcile, refunds)

    def __init__(
        self,
        secret_key: str | None,
        webhook_secret: str | None,
        *,
        api_base: str | None = None,
        tolerance: int = 300,
        timeout: float = 15.0,
        public_url: str | None = None,
        max_network_retries: int = 1,
    ) -> None:
        self._secret_key = secret_key or None
        self._webhook_secret = webhook_secret or None
        self.api_base = api_base.rstrip("/") if api_base else None
        self.tolerance = tolerance
        self.timeout = timeout
        self.public_url = public_url
        self._client: stripe.StripeClient | None = None
        if self._secret_key:
            self._client = stripe.StripeClient(
                self._secret_key,
                base_addresses={"api": self.api_base} if self.api_base else None,
                http_client=stripe.RequestsClient(timeout=timeout),
                max_network_retries=max_network_retries,
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> StripeProvider | None:
        """The provider the settings configure; None when neither a secret key nor a webhook
        secret is set."""
        key = settings.stripe_secret_key.get_secret_value() if settings.stripe_secret_key else None
        whsec = settings.stripe_webhook_secret.get_secret_value() if settings.stripe_webhook_secret else None
        if not key and not whsec:
            return None
        return cls(
            key,
            whsec,
            api_base=settings.stripe_api_base,
            tolerance=settings.stripe_webhook_tolerance_seconds,
            timeout=settings.provider_timeout_seconds,
            public_url=settings.public_url,
        )

    @property
    def has_api(self) -> bool:
        """Whether a secret key is configured (checkouts, portal, reconcile, meter events)."""
        return self._client is not None

    def __repr__(self) -> str:  # never the keys
        return f"StripeProvider(api={'yes' if self._client else 'no'}, api_base={self.api_base!r})"

    # ---- webhooks ------------------------------------------------------------------------------
    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent:
        if not self._webhook_secret:
            raise ProviderNotConfigured(
                "Stripe webhooks are not configured (set TOLLKEEP_STRIPE_WEBHOOK_SECRET)"
            )
        header = lower_headers(headers).get("stripe-signature")
        if not header:
            raise SignatureInvalid("no Stripe-Signature header")
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SignatureInvalid("the body is not UTF-8: not signed by Stripe") from None
        try:
            stripe.WebhookSignature.verify_header(text, header, self._webhook_secret, self.tolerance)
        except stripe.SignatureVerificationError as e:
            raise SignatureInvalid(f"Stripe-Signature did not verify: {_reason(str(e))}") from None
        if self.tolerance:
            # the SDK only refuses old timestamps; a signed one from the future is as suspicious
            t = _signed_timestamp(header)
            if t is not None and t > time.time() + self.tolerance:
                raise SignatureInvalid(
                    "Stripe-Signature did not verify: timestamp outside the tolerance zone (future)"
                )
        try:
            payload = json.loads(text)
        except ValueError:
            raise MalformedEvent("the Stripe event is not JSON") from None
        if not isinstance(payload, dict):
            raise MalformedEvent("the Stripe event is not a JSON object")
        event_id, event_type = payload.get("id"), payload.get("type")
        if not isinstance(event_id, str) or not event_id:
            raise MalformedEvent("the Stripe event has no id")
        if not isinstance(event_type, str) or not event_type:
            raise MalformedEvent("the Stripe event has no type")
        return VerifiedEvent(event_id, event_type, payload, _when(payload.get("created")))

    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]:
        if event.type not in HANDLED_TYPES:
            return [Recorded(f"ignored: {event.type}")]
        data = _dict(event.payload.get("data"))
        obj = _dict(data.get("object"))
        if not obj.get("id"):
            raise CannotApply(f"Stripe event {event.event_id} ({event.type}) has no data.object")
        prev = _dict(data.get("previous_attributes"))
        t = event.type
        if t == "checkout.session.completed":
            if obj.get("payment_status") not in _PAID:
                return [
                    Recorded(
                        "checkout completed, payment pending (an asynchronous payment method)",
                        {"session": obj["id"], "payment_status": obj.get("payment_status")},
                    )
                ]
            return [self._settled_session(obj, catalog)]
        if t == "checkout.session.async_payment_succeeded":
            return [self._settled_session(obj, catalog)]
        if t == "checkout.session.async_payment_failed":
            return [
                PaymentFailed(
                    payment_id=payment_id_of_session(obj),
                    buyer=_buyer(obj, _metadata(obj)),
                    reason="the asynchronous payment failed",
                    amount=_int(obj.get("amount_total")),
                    currency=_currency(obj.get("currency")),
                )
            ]
        if t == "invoice.paid":
            return [self._invoice_paid(obj, catalog)]
        if t == "invoice.payment_failed":
            return [self._invoice_failed(obj)]
        if t == "customer.subscription.updated":
            return [self._subscription_updated(event, obj, prev, catalog)]
        if t == "customer.subscription.deleted":
            return [self._subscription_deleted(obj, catalog)]
        if t in ("customer.subscription.paused", "customer.subscription.resumed"):
            return [
                SubscriptionPaused(
                    ref=event.event_id,
                    subscription_ref=str(obj["id"]),
                    buyer=_buyer(obj, _metadata(obj)),
                    paused=t.endswith(".paused"),
                )
            ]
        return self._charge_refunded(obj, prev)  # charge.refunded

    def _settled_session(self, s: Mapping[str, Any], catalog: Catalog) -> Action:
        md = _metadata(s)
        pack, plan = md.get(META_PACK), md.get(META_PLAN)
        if not pack and not plan:
            return Recorded(
                "a Checkout Session tollkeep did not create (no tollkeep_pack / tollkeep_plan metadata)",
                {"session": s["id"]},
            )
        if pack and catalog.pack(pack) is None:
            raise CannotApply(f"Stripe checkout {s['id']} is for pack {pack!r}, which the catalog lacks")
        if plan and catalog.plan(plan) is None:
            raise CannotApply(f"Stripe checkout {s['id']} is for plan {plan!r}, which the catalog lacks")
        return PaymentSettled(
            payment_id=payment_id_of_session(s),
            buyer=_buyer(s, md),
            pack=pack,
            plan=plan,
            amount=_int(s.get("amount_total")),
            currency=_currency(s.get("currency")),
            checkout_id=md.get(META_CHECKOUT),
            subscription_ref=_id(s.get("subscription")),
        )

    def _invoice_paid(self, inv: Mapping[str, Any], catalog: Catalog) -> Action:
        reason = inv.get("billing_reason")
        sub, details = _invoice_subscription(inv)
        md = _metadata(details, inv)
        if md.get(META_INVOICE):  # pays one of our subscriptions' invoices: the applier settles it
            return PaymentSettled(
                payment_id=str(inv["id"]),
                buyer=_buyer(inv, md),
                amount=_int(inv.get("amount_paid")),
                currency=_currency(inv.get("currency")),
                invoice_id=md[META_INVOICE],
            )
        if reason != "subscription_cycle":
            note = {
                "subscription_create": "the first invoice of a subscription: its checkout session pays it",
                "subscription_update": "a proration invoice: customer.subscription.updated moves the plan",
            }.get(str(reason), "not a subscription renewal")
            return Recorded(f"invoice paid ({reason}): {note}", {"invoice": inv["id"]})
        plan = _plan_of(_invoice_price(inv), md, catalog, what=f"renewal invoice {inv['id']}")
        start, end = _invoice_period(inv)
        return PaymentSettled(
            payment_id=str(inv["id"]),
            buyer=_buyer(inv, md),
            plan=plan.key,
            amount=_int(inv.get("amount_paid")),
            currency=_currency(inv.get("currency")),
            subscription_ref=sub,
            renewal=True,
            period_start=start,
            period_end=end,
        )

    def _invoice_failed(self, inv: Mapping[str, Any]) -> Action:
        sub, details = _invoice_subscription(inv)
        error = _dict(inv.get("last_finalization_error")).get("message")
        attempt = _int(inv.get("attempt_count"))
        reason = error if isinstance(error, str) and error else "the invoice payment failed"
        if attempt:
            reason += f" (attempt {attempt})"
        return PaymentFailed(
            payment_id=str(inv["id"]),
            buyer=_buyer(inv, _metadata(details, inv)),
            reason=reason,
            amount=_int(inv.get("amount_due")),
            currency=_currency(inv.get("currency")),
            subscription_ref=sub,
        )

    def _subscription_updated(
        self, event: VerifiedEvent, sub: Mapping[str, Any], prev: Mapping[str, Any], catalog: Catalog
    ) -> Action:
        status = sub.get("status")
        details = {"subscription": sub["id"], "status": status}
        if status in ("canceled", "incomplete_expired"):
            return Recorded("subscription ended: customer.subscription.deleted takes effect", details)
        if status == "incomplete":
            return Recorded("subscription awaiting its first payment", details)
        if "pause_collection" in prev or ("status" in prev and "paused" in (status, prev.get("status"))):
            # collection paused (pause_collection set) or resumed (cleared), or Stripe's paused status
            paused = bool(sub.get("pause_collection")) or status == "paused"
            return SubscriptionPaused(
                ref=event.event_id,
                subscription_ref=str(sub["id"]),
                buyer=_buyer(sub, _metadata(sub)),
                paused=paused,
            )
        if prev and "items" not in prev:
            # a status or schedule change (cancel_at_period_end set or withdrawn, past_due, back to
            # active): the plan stays; the ending itself comes as customer.subscription.deleted
            changed = ", ".join(sorted(prev))
            if sub.get("cancel_at_period_end") or sub.get("cancel_at"):
                return Recorded(
                    f"subscription cancellation scheduled ({changed})",
                    {**details, "cancel_at": sub.get("cancel_at")},
                )
            return Recorded(f"subscription updated ({changed}); the plan is unchanged", details)
        price = _subscription_price(sub)
        plan = catalog.plan_for_stripe_price(price) if price else None
        if plan is None:
            # the subscription's tollkeep_plan metadata is what was bought, not what it became
            raise CannotApply(
                f"Stripe subscription {sub['id']} moved to price {price!r}, which is the "
                "stripe_price_id of no plan in the catalog"
            )
        return PlanChanged(
            ref=event.event_id,
            buyer=_buyer(sub, _metadata(sub)),
            plan=plan.key,
            subscription_ref=str(sub["id"]),
        )

    def _subscription_deleted(self, sub: Mapping[str, Any], catalog: Catalog) -> Action:
        md = _metadata(sub)
        price = _subscription_price(sub)
        plan = catalog.plan_for_stripe_price(price) if price else None
        key = plan.key if plan else md.get(META_PLAN)
        # one ending per subscription, whichever event (or replay) reports it
        return PlanCancelled(
            ref=f"{sub['id']}:cancelled", buyer=_buyer(sub, md), plan=key, subscription_ref=str(sub["id"])
        )

    def _charge_refunded(self, ch: Mapping[str, Any], prev: Mapping[str, Any]) -> list[Action]:
        charge_id = str(ch["id"])
        pi = _id(ch.get("payment_intent"))
        invoice = _id(ch.get("invoice"))
        if invoice is None and "invoice" not in ch and pi:
            invoice = self._invoice_paid_by(pi)  # charges lost their invoice field in 2025-03-31
        payment_id = invoice or pi or charge_id
        md = _metadata(ch)
        buyer = _buyer(ch, md)
        currency = _currency(ch.get("currency"))
        total = _int(ch.get("amount"))
        refunds = self._refunds_of(ch)
        if refunds is not None:
            # every refund of the charge, each idempotent on its own id: an event processed late
            # (after a second partial refund) still counts each refund exactly once
            out: list[Action] = [
                PaymentRefunded(
                    payment_id=payment_id,
                    refund_id=str(r["id"]),
                    buyer=buyer,
                    amount=int(r["amount"]),
                    currency=_currency(r.get("currency")) or currency,
                    total=total,
                )
                for r in sorted(refunds, key=lambda r: (r.get("created") or 0, str(r["id"])))
                if r.get("status") not in ("failed", "canceled") and _int(r.get("amount"))
            ]
            return out or [Recorded("charge refunded, no settled refund listed", {"charge": charge_id})]
        # no refund list (webhook-only configuration, API versions that do not embed refunds):
        # the increase of amount_refunded, idempotent on the running total
        refunded = _int(ch.get("amount_refunded")) or 0
        before = _int(prev.get("amount_refunded")) or 0
        if refunded <= before:
            return [Recorded("charge.refunded without a new refunded amount", {"charge": charge_id})]
        return [
            PaymentRefunded(
                payment_id=payment_id,
                refund_id=f"{charge_id}:{refunded}",
                buyer=buyer,
                amount=refunded - before,
                currency=currency,
                total=total,
            )
        ]

    def _invoice_paid_by(self, payment_intent: str) -> str | None:
        """The invoice a PaymentIntent paid (a subscription's), through the InvoicePayments API;
        None for a one-off payment, without a secret key, or when the server has no such API."""
        client = self._client
        if client is None:
            return None
        params: Any = {"payment": {"type": "payment_intent", "payment_intent": payment_intent}, "limit": 1}
        try:
            page = client.v1.invoice_payments.list(params)
        except stripe.InvalidRequestError as e:
            if e.http_status == 404:  # a Stripe-compatible server without this API (a mock)
                return None
            raise self._unavailable("finding the invoice of a payment", e) from None
        except stripe.StripeError as e:
            raise self._unavailable("finding the invoice of a payment", e) from None
        for item in page.data:
            return _id(item.to_dict().get("invoice"))
        return None

    def _refunds_of(self, ch: Mapping[str, Any]) -> Sequence[Mapping[str, Any]] | None:
        embedded = _dict(ch.get("refunds"))
        data = embedded.get("data")
        if isinstance(data, list) and not embedded.get("has_more"):
            return [_dict(r) for r in data if _dict(r).get("id")]
        client = self._client
        if client is None:
            return None
        listing = self._call(
            "listing the refunds of a charge",
            lambda: client.v1.refunds.list({"charge": str(ch["id"]), "limit": self.page_size}),
        )
        return self._call(
            "listing the refunds of a charge",
            lambda: [r.to_dict() for r in listing.auto_paging_iter()],
        )

    # ---- the API -------------------------------------------------------------------------------
    def _api(self) -> stripe.StripeClient:
        if self._client is None:
            raise ProviderNotConfigured("the Stripe API is not configured (set TOLLKEEP_STRIPE_SECRET_KEY)")
        return self._client

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one API call; every Stripe failure becomes :class:`ProviderUnavailable` (retried
        later), with no key in the message."""
        try:
            return fn()
        except stripe.StripeError as e:
            raise self._unavailable(what, e) from None

    def _unavailable(self, what: str, e: stripe.StripeError) -> ProviderUnavailable:
        if isinstance(e, stripe.AuthenticationError | stripe.PermissionError):
            return ProviderUnavailable(
                f"Stripe refused the API key while {what} (authentication failed: "
                "check TOLLKEEP_STRIPE_SECRET_KEY)",
                details={"reason": "authentication"},
            )
        if isinstance(e, stripe.APIConnectionError):
            return ProviderUnavailable(
                f"Stripe could not be reached while {what} (network error or timeout)",
                details={"reason": "unreachable"},
            )
        status = e.http_status
        detail = _redact(e.user_message or str(e) or type(e).__name__, self._secret_key)
        return ProviderUnavailable(
            f"Stripe answered HTTP {status} while {what}: {detail}",
            details={"reason": "api_error", "stripe_status": status, "stripe_code": e.code},
        )

    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated:
        client = self._api()
        md: dict[str, str] = {k: str(v) for k, v in request.metadata.items()}
        md[META_CHECKOUT] = request.checkout_id
        if request.customer_id:
            md[META_CUSTOMER] = request.customer_id
        params: dict[str, Any] = {
            "success_url": request.success_url,
            "cancel_url": request.cancel_url,
            "client_reference_id": request.checkout_id,
        }
        if request.email:
            params["customer_email"] = request.email
        if request.pack is not None:
            pack = request.pack
            md[META_PACK] = pack.key
            if pack.stripe_price_id:
                item: dict[str, Any] = {"price": pack.stripe_price_id, "quantity": 1}
            else:
                product: dict[str, Any] = {"name": pack.name}
                if pack.description:
                    product["description"] = pack.description
                item = {
                    "price_data": {
                        "currency": request.currency.lower(),
                        "unit_amount": request.amount,
                        "product_data": product,
                    },
                    "quantity": 1,
                }
            params.update(mode="payment", line_items=[item], payment_intent_data={"metadata": md})
        elif request.plan is not None:
            plan = request.plan
            if not plan.stripe_price_id:
                raise CannotApply(
                    f"plan {plan.key!r} has no stripe_price_id: it cannot be bought through Stripe",
                    code="plan_not_purchasable",
                )
            md[META_PLAN] = plan.key
            sub: dict[str, Any] = {"metadata": md}
            if plan.trial_days:
                sub["trial_period_days"] = plan.trial_days
            params.update(
                mode="subscription",
                line_items=[{"price": plan.stripe_price_id, "quantity": 1}],
                subscription_data=sub,
            )
        else:
            raise CannotApply("a checkout is for a pack or a plan", code="invalid_request")
        params["metadata"] = md
        session = self._call(
            "creating a Checkout Session",
            lambda: client.v1.checkout.sessions.create(
                params,  # type: ignore[arg-type]
                {"idempotency_key": f"tollkeep-checkout-{request.checkout_id}"},
            ),
        )
        if not session.url:
            raise ProviderUnavailable("Stripe created a Checkout Session without a url")
        return CheckoutCreated(url=session.url, provider_ref=session.id, expires_at=_when(session.expires_at))

    def portal_url(self, stripe_customer_id: str, return_url: str) -> str:
        """A Billing Portal link for a Stripe customer (``cus_…``, or our ``stripe:cus_…``
        external ref): manage the card, switch or cancel the plan, see invoices."""
        client = self._api()
        customer = stripe_customer_id.removeprefix("stripe:")
        session = self._call(
            "creating a Billing Portal session",
            lambda: client.v1.billing_portal.sessions.create(
                {"customer": customer, "return_url": return_url}
            ),
        )
        return str(session.url)

    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]:
        """Complete, paid Checkout Sessions created since ``since`` and paid renewal invoices
        (``subscription_cycle``) created since then, as ``checkout.session.completed`` /
        ``invoice.paid`` events with id ``reconcile:<session or invoice id>``. Without a secret
        key: :class:`ReconcileNotSupported`."""
        if self._client is None:
            raise ReconcileNotSupported(
                "Stripe reconcile needs the API (set TOLLKEEP_STRIPE_SECRET_KEY): only webhooks are set up"
            )
        client = self._client
        gte = int(since.timestamp())
        sessions = self._call(
            "listing Checkout Sessions",
            lambda: _all(
                client.v1.checkout.sessions.list(
                    {"status": "complete", "created": {"gte": gte}, "limit": self.page_size}
                ).auto_paging_iter()
            ),
        )
        invoices = self._call(
            "listing paid invoices",
            lambda: _all(
                client.v1.invoices.list(
                    {"status": "paid", "created": {"gte": gte}, "limit": self.page_size}
                ).auto_paging_iter()
            ),
        )
        out: list[VerifiedEvent] = []
        for s in sessions:
            md = _metadata(s)
            if s.get("payment_status") in _PAID and (md.get(META_PACK) or md.get(META_PLAN)):
                out.append(_shaped("checkout.session.completed", s))
        for inv in invoices:
            if inv.get("status") == "paid" and inv.get("billing_reason") == "subscription_cycle":
                out.append(_shaped("invoice.paid", inv))
        return out

    def report_meter_event(
        self,
        event_name: str,
        stripe_customer_id: str,
        value: int | str,
        identifier: str,
        timestamp: datetime | None = None,
    ) -> None:
        """One Billing Meter Event (usage of a postpaid plan). ``identifier`` is our event id:
        Stripe deduplicates on it, and it is the request's idempotency key too, so a retry never
        reports twice."""
        client = self._api()
        params: dict[str, Any] = {
            "event_name": event_name,
            "payload": {
                "stripe_customer_id": stripe_customer_id.removeprefix("stripe:"),
                "value": str(value),
            },
            "identifier": identifier,
        }
        if timestamp is not None:
            params["timestamp"] = int(timestamp.timestamp())

        def create() -> None:
            try:
                client.v1.billing.meter_events.create(
                    params,  # type: ignore[arg-type]
                    {"idempotency_key": f"tollkeep-meter-{identifier}"},
                )
            except stripe.InvalidRequestError as e:
                # Stripe keeps identifiers unique for at least 24 h: an event reported before
                # (a retry after a lost answer, past the idempotency key's lifetime) is done
                if not _duplicate_identifier(e):
                    raise

        self._call("reporting a meter event", create)


def from_settings(settings: Settings) -> StripeProvider | None:
    """The registry's entry point (``payments/providers/__init__.py``)."""
    return StripeProvider.from_settings(settings)


def _plan_of(price: str | None, md: Mapping[str, str], catalog: Catalog, *, what: str) -> Plan:
    """The plan a price id maps to in the catalog, else the one the metadata names."""
    plan = catalog.plan_for_stripe_price(price) if price else None
    if plan is not None:
        return plan
    key = md.get(META_PLAN)
    if key:
        plan = catalog.plan(key)
        if plan is None:
            raise CannotApply(f"Stripe {what} is for plan {key!r}, which the catalog lacks")
        return plan
    raise CannotApply(
        f"Stripe {what}: price {price!r} is the stripe_price_id of no plan in the catalog "
        "and the subscription has no tollkeep_plan metadata"
    )


def _all(items: Iterable[Any]) -> list[dict[str, Any]]:
    return [item.to_dict() for item in items]


def _shaped(event_type: str, obj: Mapping[str, Any]) -> VerifiedEvent:
    """A listed object as the webhook event that would have announced it."""
    event_id = f"reconcile:{obj['id']}"
    payload = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "created": obj.get("created"),
        "livemode": obj.get("livemode", False),
        "data": {"object": dict(obj)},
    }
    return VerifiedEvent(event_id, event_type, payload, _when(obj.get("created")))


def _duplicate_identifier(e: stripe.StripeError) -> bool:
    """Stripe's answer to a meter event whose ``identifier`` it already has."""
    message = (e.user_message or str(e) or "").lower()
    return e.code == "resource_already_exists" or ("identifier" in message and "already" in message)


def _signed_timestamp(header: str) -> int | None:
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _reason(message: str) -> str:
    """The SDK's verification message, shortened to what a sender may learn."""
    m = message.lower()
    if "tolerance" in m:
        return "timestamp outside the tolerance zone"
    if "unable to extract" in m or "no signatures found with expected scheme" in m:
        return "unreadable header"
    return "signature mismatch"
