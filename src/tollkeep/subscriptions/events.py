"""Events the subscriptions domain emits (kit/events.py); all go to the outbox (webhooks)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = [
    "CodeRedeemed",
    "SubscriptionCanceled",
    "SubscriptionCreated",
    "SubscriptionLapsed",
    "SubscriptionPastDue",
    "SubscriptionPaused",
    "SubscriptionPlanChanged",
    "SubscriptionRenewalFailed",
    "SubscriptionRenewalPending",
    "SubscriptionRenewed",
    "SubscriptionResumed",
]


@dataclass(frozen=True)
class SubscriptionCreated(Event):
    topic = "subscription.created"
    subscription_id: str
    customer_id: str
    plan: str
    status: str
    current_period_end: str


@dataclass(frozen=True)
class SubscriptionRenewalPending(Event):
    """The invoice of the next cycle is open: pay it (``pay_url`` when the provider gives one)."""

    topic = "subscription.renewal_pending"
    subscription_id: str
    customer_id: str
    invoice_id: str
    cycle: int
    currency: str
    amount: int
    pay_url: str | None


@dataclass(frozen=True)
class SubscriptionPastDue(Event):
    """The paid period ended and the next cycle is not paid yet (until ``grace_until``)."""

    topic = "subscription.past_due"
    subscription_id: str
    customer_id: str
    cycle: int
    grace_until: str


@dataclass(frozen=True)
class SubscriptionRenewed(Event):
    topic = "subscription.renewed"
    subscription_id: str
    customer_id: str
    invoice_id: str
    cycle: int
    current_period_end: str
    reactivated: bool


@dataclass(frozen=True)
class SubscriptionRenewalFailed(Event):
    """Creating the renewal invoice failed ``failures`` times; ``stopped``: no more automatic
    attempts (the operator retries: ``POST /admin/subscriptions/{id}/retry-renewal``)."""

    topic = "subscription.renewal_failed"
    subscription_id: str
    customer_id: str
    failures: int
    error: str
    next_attempt_at: str | None
    stopped: bool


@dataclass(frozen=True)
class SubscriptionLapsed(Event):
    topic = "subscription.lapsed"
    subscription_id: str
    customer_id: str
    plan: str
    now_plan: str | None
    suspended_keys: list[str]


@dataclass(frozen=True)
class SubscriptionCanceled(Event):
    topic = "subscription.canceled"
    subscription_id: str
    customer_id: str
    plan: str
    at_period_end: bool


@dataclass(frozen=True)
class SubscriptionPlanChanged(Event):
    """The customer's plan moved because of the subscription (lapsed: to the free plan;
    reactivated: back to the subscribed plan; canceled: to the free plan)."""

    topic = "subscription.plan_changed"
    subscription_id: str
    customer_id: str
    plan: str | None
    previous: str | None
    reason: str


@dataclass(frozen=True)
class CodeRedeemed(Event):
    """A customer redeemed a code (``kind``: discount, free_plan, free_license) on a subscription,
    a plan change or for a licence."""

    topic = "code.redeemed"
    code: str
    customer_id: str
    kind: str
    subscription_id: str | None
    license_id: str | None


@dataclass(frozen=True)
class SubscriptionPaused(Event):
    """Paused (by an operator, or the provider): not renewed, not lapsed; the customer is on the
    default plan (``now_plan``) until it is resumed."""

    topic = "subscription.paused"
    subscription_id: str
    customer_id: str
    plan: str
    now_plan: str | None
    suspended_keys: list[str]


@dataclass(frozen=True)
class SubscriptionResumed(Event):
    """Resumed: the customer is back on the plan and cycle ``cycle`` is due now (invoiced, or
    billed by the provider)."""

    topic = "subscription.resumed"
    subscription_id: str
    customer_id: str
    plan: str
    cycle: int
