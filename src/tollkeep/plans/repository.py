"""The plans domain's SQL: plan membership (``customers.plan``, ``customers.plan_changed_at``),
allowance state (``wallets.allowance_until``, ``wallets.carryover_done``) and the subscription
periods caps and tier counters count (``wallets.period_anchor``, ``period_since``,
``period_until``). These columns are written here and nowhere else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update

from tollkeep.customers.models import Customer
from tollkeep.kit.clock import SubscriptionPeriods
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.ledger.models import Wallet
from tollkeep.plans.domain import BillingPeriod
from tollkeep.subscriptions.models import Subscription

__all__ = [
    "billing_period",
    "set_allowance_state",
    "set_customer_plan",
    "set_usage_periods",
    "wallets_due_for_allowance",
]

C = table_of(Customer)
W = table_of(Wallet)
SUB = table_of(Subscription)
BILLED = ("trialing", "active", "past_due")  # a subscription still billing its customer's plan


def set_customer_plan(s: Tx, customer_id: str, plan: str | None, now: datetime) -> None:
    s.execute(update(C).where(C.c.id == customer_id).values(plan=plan, plan_changed_at=now, updated_at=now))


def set_allowance_state(s: Tx, wallet_id: str, now: datetime, **values: Any) -> None:
    """``allowance_until`` (granted up to, exclusive) and/or ``carryover_done``."""
    assert set(values) <= {"allowance_until", "carryover_done"}, values
    s.execute(update(W).where(W.c.id == wallet_id).values(**values, updated_at=now))


def set_usage_periods(s: Tx, w: Any, now: datetime, periods: SubscriptionPeriods | None) -> None:
    """Carry ``periods`` on the wallet row ``w`` (None: calendar periods); no write when they
    are already what it carries."""
    values = {
        "period_anchor": periods.anchor if periods else None,
        "period_since": periods.since if periods else None,
        "period_until": periods.until if periods else None,
    }
    if all(getattr(w, k) == v for k, v in values.items()):
        return
    s.execute(update(W).where(W.c.id == w.id).values(**values, updated_at=now))


def wallets_due_for_allowance(s: Tx, now: datetime, limit: int) -> list[Any]:
    """Active customers on a plan whose allowance is granted only up to before ``now``."""
    return list(
        s.execute(
            select(W.c.id, W.c.customer_id)
            .join(C, C.c.id == W.c.customer_id)
            .where(C.c.plan.is_not(None), C.c.status == "active")
            .where(or_(W.c.allowance_until.is_(None), W.c.allowance_until <= now))
            .limit(limit)
        ).all()
    )


def billing_period(s: Tx, customer_id: str) -> BillingPeriod | None:
    """The paid cycle of the subscription billing this customer's plan (a read of the
    subscriptions domain's table), or None: the plan's allowance follows calendar periods."""
    row = s.execute(
        select(
            SUB.c.id,
            SUB.c.plan,
            SUB.c.cycle,
            SUB.c.current_period_start,
            SUB.c.current_period_end,
            SUB.c.started_at,
            SUB.c.anchor_at,
        )
        .where(SUB.c.customer_id == customer_id, SUB.c.status.in_(BILLED))
        .order_by(SUB.c.created_at.desc())
        .limit(1)
    ).first()
    if row is None:
        return None
    return BillingPeriod(
        row.id,
        row.plan,
        row.cycle,
        row.current_period_start,
        row.current_period_end,
        row.started_at,
        row.anchor_at,
    )
