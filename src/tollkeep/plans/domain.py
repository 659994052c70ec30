"""The plans domain's rules, pure: which period an allowance belongs to, when a plan change
carries unused allowance over. No database, no clock of its own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from tollkeep.catalog import Plan
from tollkeep.kit.clock import period_bounds

__all__ = ["FAR_FUTURE", "AllowancePeriod", "allowance_period", "carries_over"]

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


def allowance_period(plan: Plan | None, now: datetime) -> AllowancePeriod | None:
    """This period's allowance of ``plan``, or None when the plan grants nothing."""
    if plan is None or plan.allowance is None or plan.allowance.amount <= 0:
        return None
    start, end, key = period_bounds(plan.allowance.period, now)
    return AllowancePeriod(plan.key, key, plan.allowance.amount, plan.allowance.priority, start, end)


def carries_over(old: Plan | None, new: Plan | None, *, done_before: bool) -> bool:
    """Moving from a free plan to a paid one carries the unused free allowance into a durable
    grant, once per customer."""
    return old is not None and old.is_free and new is not None and not new.is_free and not done_before
