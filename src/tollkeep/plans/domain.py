"""The plans domain's rules, pure: which period an allowance belongs to, when a plan change
carries unused allowance over. No database, no clock of its own.

A plan's allowance follows calendar periods (``plan:m:2026-11``), except for a customer whose
plan is billed by a subscription: then an allowance whose period is the plan's billing period
follows the subscription's own cycles (``plan:sub_…:3``, the cycle's bounds), and nothing is
granted for a cycle not paid for. Other allowances (daily; monthly on a yearly plan) stay on
calendar periods; a lifetime one is granted once.

Caps and tier counters of a customer whose plan is billed by a subscription count the
subscription's own periods (:func:`usage_periods`, carried on the wallet row: the ledger reads
them with its lock and applies ``kit.clock.usage_period``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tollkeep.catalog import Plan
from tollkeep.kit.clock import SubscriptionPeriods, period_bounds

__all__ = [
    "FAR_FUTURE",
    "AllowancePeriod",
    "BillingPeriod",
    "allowance_period",
    "carries_over",
    "usage_periods",
]

FAR_FUTURE = datetime(9999, 1, 1, tzinfo=UTC)  # "granted for good" (a lifetime allowance)


@dataclass(frozen=True)
class AllowancePeriod:
    """The allowance a plan grants for the period holding ``now``: granted once per ``key``
    (``plan:period``), effective from ``start``, expiring at ``end`` (None: never)."""

    plan: str
    period: str  # "2026-11", "lifetime", ...
    amount: int
    priority: int
    start: datetime | None
    end: datetime | None

    @property
    def key(self) -> str:
        return f"{self.plan}:{self.period}"

    @property
    def until(self) -> datetime:
        """Up to when the wallet's allowance is granted once this period's is."""
        return self.end or FAR_FUTURE


@dataclass(frozen=True)
class BillingPeriod:
    """The paid cycle of the subscription that bills a customer's plan: ``cycle`` covers
    [``start``, ``end``)."""

    subscription_id: str
    plan: str
    cycle: int
    start: datetime
    end: datetime
    started_at: datetime | None = None  # the subscription's first period starts here
    anchor_at: datetime | None = None  # its paid cycles count from here (after a trial)

    @property
    def key(self) -> str:
        return f"{self.subscription_id}:{self.cycle}"


def follows_subscription(plan: Plan | None, billing: BillingPeriod | None) -> bool:
    """The plan's allowance follows the subscription's cycles: its period is the plan's billing
    period (a monthly allowance of a monthly plan). A daily allowance, or a monthly one of a
    yearly plan, stays on calendar periods; a lifetime one is granted once."""
    return (
        billing is not None
        and plan is not None
        and plan.key == billing.plan
        and plan.allowance is not None
        and plan.allowance.period == plan.period
    )


def allowance_period(
    plan: Plan | None, now: datetime, billing: BillingPeriod | None = None
) -> AllowancePeriod | None:
    """This period's allowance of ``plan``, or None when the plan grants nothing (also: billed
    by a subscription whose paid cycle is over, ``now`` outside [start, end): nothing until the
    next cycle is paid)."""
    if plan is None or plan.allowance is None or plan.allowance.amount <= 0:
        return None
    if billing is not None and follows_subscription(plan, billing):
        if not billing.start <= now < billing.end:
            return None
        a = plan.allowance
        return AllowancePeriod(plan.key, billing.key, a.amount, a.priority, billing.start, billing.end)
    start, end, key = period_bounds(plan.allowance.period, now)
    return AllowancePeriod(plan.key, key, plan.allowance.amount, plan.allowance.priority, start, end)


def usage_periods(
    plan_key: str | None, plan: Plan | None, billing: BillingPeriod | None
) -> SubscriptionPeriods | None:
    """The periods a wallet's caps and tier counters count while on plan ``plan_key``: those of
    the subscription billing that very plan (``billing``: a trialing, active or past_due one),
    up to its current cycle's end + the plan's grace (an unpaid subscription lapses then; past
    the cycle's end the next cycle's bounds follow from the anchor, so a renewal paid late
    counts in the cycle it pays for). None (calendar periods): no such subscription, or the
    customer is on another plan than the subscription's."""
    if (
        billing is None
        or plan_key is None
        or billing.plan != plan_key
        or billing.started_at is None
        or billing.anchor_at is None
    ):
        return None
    grace = timedelta(days=plan.grace_days if plan is not None else 0)
    return SubscriptionPeriods(billing.anchor_at, billing.started_at, billing.end + grace)


def carries_over(old: Plan | None, new: Plan | None, *, done_before: bool) -> bool:
    """Moving from a free plan to a paid one carries the unused free allowance into a durable
    grant, once per customer."""
    return old is not None and old.is_free and new is not None and not new.is_free and not done_before
