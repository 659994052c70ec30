"""What every payment provider is to tollkeep: one protocol, plain values in and out.

A provider adapter does four things and nothing else (no database, no ledger):

1. ``verify(body, headers)`` - check the raw webhook body with the provider's signature scheme
   and say what it is (:class:`VerifiedEvent`: a deduplication id, a type, the parsed payload).
   Raises :class:`SignatureInvalid` (401) or :class:`MalformedEvent` (400); never trusts anything
   it did not verify.
2. ``interpret(event, catalog)`` - turn a stored event into domain :data:`Action` values (a
   settled payment, a plan change, a refund, ...). May call the provider's API (Zaprite re-fetches
   the order). Raises :class:`ProviderUnavailable` (retried later) or :class:`CannotApply`
   (the event is marked failed with the reason: unknown pack, unknown customer, ...).
3. ``create_checkout(request)`` - a hosted payment page for a pack or a plan, carrying our
   checkout id, customer and pack/plan in the provider's metadata.
4. ``settled_since(since)`` - for ``tollkeep payments reconcile``: settled payments the provider
   knows of, as :class:`VerifiedEvent` values shaped like the webhook would have been (their
   actions carry the same ``payment_id``, so a payment seen twice takes effect once).

The inbox (``payments/inbox.py``) stores, deduplicates, retries and applies; the actions are
applied through the ledger's, plans' and keys' services (``payments/apply.py``), each with an
idempotency key derived from the provider's payment id: reprocessing charges nothing twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Protocol, runtime_checkable

from tollkeep.catalog import Catalog, Pack, Plan
from tollkeep.kit.errors import TollkeepError

__all__ = [
    "META_CHECKOUT",
    "META_CUSTOMER",
    "META_INVOICE",
    "META_PACK",
    "META_PLAN",
    "Action",
    "Buyer",
    "CannotApply",
    "CheckoutCreated",
    "CheckoutRequest",
    "MalformedEvent",
    "PaymentFailed",
    "PaymentRefunded",
    "PaymentSettled",
    "PlanCancelled",
    "PlanChanged",
    "Provider",
    "ProviderNotConfigured",
    "ProviderUnavailable",
    "ReconcileNotSupported",
    "Recorded",
    "SignatureInvalid",
    "SubscriptionPaused",
    "VerifiedEvent",
    "lower_headers",
]


# ---- errors -------------------------------------------------------------------------------------
class SignatureInvalid(TollkeepError):
    """The body was not signed with our secret (or the timestamp is outside the tolerance)."""

    code = "invalid_signature"
    status = 401


class MalformedEvent(TollkeepError):
    """Signed, but not an event we can read (not JSON, no id)."""

    code = "malformed_event"
    status = 400


class ProviderNotConfigured(TollkeepError):
    code = "provider_not_configured"
    status = 404


class ProviderUnavailable(TollkeepError):
    """The provider's API failed or timed out: try again later (the inbox retries)."""

    code = "provider_unavailable"
    status = 502


class CannotApply(TollkeepError):
    """The event is genuine but cannot take effect as things are (unknown pack or customer): the
    inbox marks it failed with this reason; an operator fixes the catalog and replays it."""

    code = "cannot_apply"
    status = 422


class ReconcileNotSupported(TollkeepError):
    """The provider offers no way (with the credentials tollkeep has) to list settled payments:
    ``settled_since`` raises this, and reconcile says so for that provider."""

    code = "reconcile_not_supported"
    status = 501


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# ---- what a provider says -----------------------------------------------------------------------
@dataclass(frozen=True)
class VerifiedEvent:
    """A webhook whose signature checked out. ``event_id`` is unique per provider (the inbox's
    deduplication key: Stripe's ``evt_…``, GitHub's delivery id, BTCPay's delivery id)."""

    event_id: str
    type: str
    payload: Mapping[str, Any]
    occurred_at: datetime | None = None


@dataclass(frozen=True)
class Buyer:
    """Who paid, as far as the provider knows. ``customer_id`` is ours (from the metadata we put
    on the checkout); ``external_ref`` is the provider's own account id (``stripe:cus_…``,
    ``github:4242``), used to find or create the customer when ``customer_id`` is unknown."""

    customer_id: str | None = None
    email: str | None = None
    external_ref: str | None = None
    name: str | None = None
    install_id: str | None = None


@dataclass(frozen=True)
class PaymentSettled:
    """Money arrived: grant ``pack`` and/or move the buyer to ``plan``, once per ``payment_id``
    (a Checkout Session id, an invoice id). ``amount`` in minor units of ``currency``."""

    payment_id: str
    buyer: Buyer
    pack: str | None = None
    plan: str | None = None
    amount: int | None = None
    currency: str | None = None
    checkout_id: str | None = None
    subscription_ref: str | None = None
    renewal: bool = False
    # ours: the subscriptions domain's invoice this pays (a renewal or an upgrade), from the
    # provider invoice's metadata (``tollkeep_invoice``): it is settled in the same transaction
    invoice_id: str | None = None
    # the period a provider-billed subscription's paid invoice covers (Stripe's line period)
    period_start: datetime | None = None
    period_end: datetime | None = None


@dataclass(frozen=True)
class PlanChanged:
    """The provider moved the buyer's subscription to ``plan`` (effective ``effective_at``; None:
    now). Idempotent on ``ref``."""

    ref: str
    buyer: Buyer
    plan: str
    effective_at: datetime | None = None
    subscription_ref: str | None = None


@dataclass(frozen=True)
class PlanCancelled:
    """The subscription ended (at ``effective_at``; None: now): the buyer goes back to the free
    plan (the catalog's default plan, or none) and, if the plan says so, their keys are
    suspended."""

    ref: str
    buyer: Buyer
    plan: str | None = None
    effective_at: datetime | None = None
    subscription_ref: str | None = None


@dataclass(frozen=True)
class PaymentFailed:
    """A payment (a renewal invoice) failed: recorded, the seller is told; nothing is granted."""

    payment_id: str
    buyer: Buyer
    reason: str | None = None
    amount: int | None = None
    currency: str | None = None
    subscription_ref: str | None = None  # a provider-billed subscription's: it is past_due


@dataclass(frozen=True)
class SubscriptionPaused:
    """The provider paused (``paused``) or resumed the subscription ``subscription_ref`` (its
    id there); ``ref`` is unique per change (idempotency)."""

    ref: str
    subscription_ref: str
    buyer: Buyer
    paused: bool


@dataclass(frozen=True)
class PaymentRefunded:
    """``amount`` of payment ``payment_id`` went back to the buyer (``refund_id`` is unique per
    refund; several partial refunds of one payment are several actions). The credits that payment
    bought are taken back in proportion, never below the wallet's overdraft limit: what cannot be
    taken back is recorded as the shortfall."""

    payment_id: str
    refund_id: str
    buyer: Buyer
    amount: int
    currency: str | None = None
    total: int | None = None  # what the payment was, to prorate a partial refund


@dataclass(frozen=True)
class Recorded:
    """Worth keeping, nothing to do (an invoice expired, a pending change was announced)."""

    note: str
    details: Mapping[str, Any] = field(default_factory=dict)


Action = (
    PaymentSettled
    | PlanChanged
    | PlanCancelled
    | PaymentFailed
    | PaymentRefunded
    | SubscriptionPaused
    | Recorded
)


@dataclass(frozen=True)
class CheckoutRequest:
    checkout_id: str  # ours (chk_…), echoed back in the provider's metadata
    customer_id: str | None
    email: str | None
    pack: Pack | None
    plan: Plan | None
    currency: str
    amount: int  # minor units of currency, from the catalog
    success_url: str
    cancel_url: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CheckoutCreated:
    url: str
    provider_ref: str  # the provider's id of the session / invoice / order
    expires_at: datetime | None = None


@runtime_checkable
class Provider(Protocol):
    """One payment provider. Implementations live in ``payments/providers/<name>.py``."""

    name: ClassVar[str]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> VerifiedEvent: ...

    def interpret(self, event: VerifiedEvent, catalog: Catalog) -> Sequence[Action]: ...

    def create_checkout(self, request: CheckoutRequest) -> CheckoutCreated: ...

    def settled_since(self, since: datetime) -> Sequence[VerifiedEvent]: ...

    # the header names worth storing with the raw body (signature, delivery id, timestamp)
    kept_headers: ClassVar[tuple[str, ...]]


# the metadata keys tollkeep puts on every checkout it creates (and reads back from webhooks)
META_CUSTOMER = "tollkeep_customer"
META_PACK = "tollkeep_pack"
META_PLAN = "tollkeep_plan"
META_CHECKOUT = "tollkeep_checkout"
META_INVOICE = "tollkeep_invoice"  # a subscription's renewal or upgrade invoice (ours: inv_…)
