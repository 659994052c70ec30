"""Pausing a subscription, and following a subscription its provider bills itself (Stripe).

**Pause / resume.** A ``trialing``, ``active`` or ``past_due`` subscription can be paused (an
operator, or the provider): it is neither renewed nor lapsed (the worker leaves it alone), a
pending upgrade is void, and the customer's entitlements drop as for a lapse (the catalog's
default plan; keys suspended when the plan says so; what was left of the cycle's allowance
closes with the plan change). An open renewal invoice stays open (paid while paused, it is
refused as not settleable; replayed after the resume, it settles). Resuming starts a new period:
the subscription is re-anchored so that cycle + 1 begins now, it is ``past_due`` (back on the
plan for the grace, the keys the pause suspended resumed), and the worker invoices cycle + 1 at
once; it is granted its allowance when paid, once (keyed by subscription and cycle, like any
renewal). No cycle is counted twice: the cycle number never goes back, and the paused time is
in no cycle.

**Followed subscriptions** (``provider`` in :data:`FOLLOWED`): the provider invoices them; the
renewal worker never does. A Stripe subscription bought through Checkout becomes a local row
(``provider_ref`` = the Stripe subscription id, unique per provider: a replayed webhook finds
it). Each paid cycle invoice records the local invoice of the next cycle (unique per subscription
and cycle; the provider's invoice id is kept, so a duplicate is a no-op) and grants its
allowance once. A failed payment makes it ``past_due``; the end of the subscription cancels it.
The payments applier calls these functions inside its own unit of work.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tollkeep.audit import record
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, InvalidInput, NotFound
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.subscriptions import domain
from tollkeep.subscriptions import repository as repo
from tollkeep.subscriptions.domain import Event as Ev
from tollkeep.subscriptions.domain import IllegalTransition, Status, SubState
from tollkeep.subscriptions.events import (
    SubscriptionCreated,
    SubscriptionPastDue,
    SubscriptionPaused,
    SubscriptionPlanChanged,
    SubscriptionRenewed,
    SubscriptionResumed,
)
from tollkeep.subscriptions.models import Invoice, Subscription

if TYPE_CHECKING:
    from tollkeep.subscriptions.service import SubscriptionService

__all__ = ["FOLLOWED", "Following"]

SUB = table_of(Subscription)
INV = table_of(Invoice)
FOLLOWED = frozenset({"stripe"})  # providers that bill their subscriptions themselves
PAUSABLE = (Status.TRIALING, Status.ACTIVE, Status.PAST_DUE)


def _state(row: Any, open_cycle: int | None) -> SubState:
    return SubState(
        Status(row.status),
        cycle=row.cycle,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        invoice_cycle=open_cycle,
        failures=row.renewal_failures,
    )


class Following:
    def __init__(self, subs: SubscriptionService) -> None:
        self.subs = subs

    # ------------------------------------------------------------------ pause / resume
    def pause_locked(self, s: Tx, row: Any, now: datetime) -> list[str]:
        """Under the row lock: pause (IllegalTransition when not pausable). Returns the keys
        suspended (to forget from the cache after the commit)."""
        domain.apply(_state(row, self.subs._open_cycle(s, row)), Ev.PAUSE)
        self.subs.changes.void_pending(s, row.id, now)
        now_plan, suspended = self.subs._drop_plan(s, row, "paused")
        self.subs._update(
            s,
            row,
            now,
            status=Status.PAUSED,
            paused_at=now,
            cancel_at_period_end=False,
            next_action_at=None,
            suspended_keys=[*(row.suspended_keys or []), *suspended],
        )
        self.subs.events.emit(s, SubscriptionPaused(row.id, row.customer_id, row.plan, now_plan, suspended))
        return suspended

    def resume_locked(self, s: Tx, row: Any, now: datetime) -> list[str]:
        """Under the row lock: resume (IllegalTransition when not paused): re-anchored so that
        cycle + 1 starts now, past_due, back on the plan. Returns the keys to resume after the
        commit."""
        open_cycle = self.subs._open_cycle(s, row)
        domain.apply(_state(row, open_cycle), Ev.RESUME)
        plan = self.subs.catalog().plan(row.plan)
        period = plan.period if plan is not None else "month"
        # cycle n (no trial) is [anchor + (n-1) periods, anchor + n periods): cycle + 1 from now
        anchor = domain.add_periods(now, period, -row.cycle)
        start, end = domain.cycle_bounds(anchor, anchor, period, row.cycle + 1)
        if row.provider in FOLLOWED:  # the provider says when its next period starts
            anchor, start = row.started_at, now
        inv = repo.invoice_of_cycle(s, row.id, row.cycle + 1)
        if inv is not None and inv.status in ("draft", "open") and row.provider not in FOLLOWED:
            repo.update_invoice(s, inv.id, period_start=start, period_end=end, updated_at=now)
        values: dict[str, Any] = {
            "status": Status.PAST_DUE,
            "paused_at": None,
            "current_period_end": start,
            "renewal_failures": 0,
            "renewal_error": None,
            "renewal_retry_at": None,
            "suspended_keys": [],
        }
        if row.provider in FOLLOWED:
            values["next_action_at"] = None
        else:
            values.update(started_at=anchor, anchor_at=anchor, _has_invoice=open_cycle is not None)
        self.subs._update(s, row, now, **values)
        # back on the plan AFTER the row says past_due: the plans domain then sees a subscription
        # billing it (its paid cycle over) and grants nothing until cycle + 1 is paid; before,
        # it would see none and grant the calendar period's allowance
        _, current = self.subs._customer_plan(s, row.customer_id)
        if current != row.plan:
            self.subs.plans.change_plan_fn(row.customer_id, row.plan)(s)
            self.subs.events.emit(
                s, SubscriptionPlanChanged(row.id, row.customer_id, row.plan, current, "resumed")
            )
        self.subs.events.emit(s, SubscriptionResumed(row.id, row.customer_id, row.plan, row.cycle + 1))
        return list(row.suspended_keys or [])

    def pause(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        def fn(s: Tx) -> tuple[dict[str, Any], list[str]]:
            now = self.subs.clock.now()
            row = self.subs._row(s, sub_id, lock=True)
            try:
                suspended = self.pause_locked(s, row, now)
            except IllegalTransition:
                raise Conflict(
                    f"subscription {sub_id} is {row.status}: only a trialing, active or past_due "
                    "subscription can be paused",
                    code="subscription_not_pausable",
                ) from None
            out = self.subs.view(s, self.subs._row(s, sub_id))
            if actor is not None:
                record(s, actor, "subscription.pause", ("subscription", sub_id), after=out, at=now)
            return out, suspended

        out, suspended = self.subs.executor.call(Command(fn, self.subs._owner(SUB, sub_id)))
        if suspended:
            self.subs.keys.forget_customer(out["customer_id"])
        return out

    def resume(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        def fn(s: Tx) -> tuple[dict[str, Any], list[str]]:
            now = self.subs.clock.now()
            row = self.subs._row(s, sub_id, lock=True)
            try:
                keys = self.resume_locked(s, row, now)
            except IllegalTransition:
                raise Conflict(
                    f"subscription {sub_id} is {row.status}, not paused", code="subscription_not_paused"
                ) from None
            out = self.subs.view(s, self.subs._row(s, sub_id))
            if actor is not None:
                record(s, actor, "subscription.resume", ("subscription", sub_id), after=out, at=now)
            return out, keys

        out, keys = self.subs.executor.call(Command(fn, self.subs._owner(SUB, sub_id)))
        self.resume_keys(keys)
        return out

    def resume_keys(self, keys: list[str]) -> None:
        """After the commit: the keys a pause suspended are resumed (one revoked meanwhile stays
        revoked)."""
        for key_id in keys:
            try:
                self.subs.keys.resume(key_id)
            except (Conflict, NotFound):
                continue

    # ------------------------------------------------------------------ followed subscriptions
    @staticmethod
    def _by_ref(s: Tx, provider: str, ref: str) -> Any:
        return s.execute(
            select(SUB).where(SUB.c.provider == provider, SUB.c.provider_ref == ref).with_for_update()
        ).first()

    def start_fn(
        self,
        customer_id: str,
        plan_key: str,
        provider: str,
        ref: str,
        *,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        currency: str | None = None,
        amount: int | None = None,
    ) -> Command[dict[str, Any] | None]:
        """A subscription the provider bills (``ref``: its id there) starts: the local row
        (once per provider and ref), the customer on the plan, cycle 1's allowance. A customer
        with another live subscription: 409 ``subscription_exists``. None: a provider whose
        subscriptions are not followed (GitHub Marketplace: its plan changes are plain ones)."""

        def fn(s: Tx) -> dict[str, Any] | None:
            if provider not in FOLLOWED:
                return None
            now = self.subs.clock.now()
            cat = self.subs.catalog()
            plan = cat.plan(plan_key)
            if plan is None:
                raise InvalidInput(f"unknown plan {plan_key!r}", code="unknown_plan")
            self.subs._customer_plan(s, customer_id)
            found = self._by_ref(s, provider, ref)
            if found is not None:
                return {"subscription": self.subs.view(s, found), "changed": False}
            for other in s.execute(
                select(SUB)
                .where(SUB.c.customer_id == customer_id, SUB.c.status != Status.CANCELED)
                .with_for_update()
            ).all():
                if other.status in (*PAUSABLE, Status.PAUSED):
                    raise Conflict(
                        f"customer {customer_id!r} already has subscription {other.id} ({other.status})",
                        code="subscription_exists",
                        details={"subscription_id": other.id},
                    )
                self.subs._cancel_locked(s, other, now, at_period_end=False)
            trial = bool(plan.trial_days) and not amount
            start = period_start or now
            end = period_end or (
                start + timedelta(days=plan.trial_days)
                if trial
                else domain.add_periods(start, plan.period, 1)
            )
            listed = (currency or next(iter(sorted(plan.prices)), "usd")).upper()
            sid = new_id("sub")
            status = Status.TRIALING if trial else Status.ACTIVE
            repo.insert_subscription(
                s,
                id=sid,
                customer_id=customer_id,
                plan=plan.key,
                provider=provider,
                provider_ref=ref,
                status=status,
                cycle=1,
                started_at=start,
                anchor_at=end if trial else start,
                current_period_start=start,
                current_period_end=end,
                cancel_at_period_end=False,
                currency=listed,
                invoice_currency=listed,
                next_action_at=None,  # the provider renews it
                renewal_failures=0,
                suspended_keys=[],
                period_price=0
                if trial
                else (amount if amount is not None else plan.prices.get(listed.lower())),
                created_at=now,
                updated_at=now,
            )
            _, current = self.subs._customer_plan(s, customer_id)
            if current == plan.key:  # cycle 1's allowance replaces the calendar period's
                self.subs.plans.restart_allowance_fn(customer_id, reason=f"subscription {sid}")(s)
            else:
                self.subs.plans.change_plan_fn(customer_id, plan.key)(s)
                self.subs.plans.refresh_allowance_fn(customer_id)(s)
            if self.subs._licensed(plan.key):  # a plan with `license = true`: its licence, once
                self.subs._follow_licence(s, sid, now)
            self.subs.events.emit(s, SubscriptionCreated(sid, customer_id, plan.key, status, iso(end) or ""))
            return {"subscription": self.subs.view(s, self.subs._row(s, sid)), "changed": True}

        return Command(fn, customer_id)

    def renewed_fn(
        self,
        provider: str,
        ref: str,
        *,
        invoice_ref: str,
        period_start: datetime | None,
        period_end: datetime | None,
        currency: str | None = None,
        amount: int | None = None,
    ) -> Command[dict[str, Any] | None]:
        """The provider's invoice ``invoice_ref`` of the subscription's next period was paid: the
        local invoice of cycle + 1 (once: unique per subscription and cycle, and a duplicate of
        ``invoice_ref`` is a no-op), the subscription active at cycle + 1 over the provider's
        period, that cycle's allowance granted once. None: no such subscription here."""

        def fn(s: Tx) -> dict[str, Any] | None:
            now = self.subs.clock.now()
            row = self._by_ref(s, provider, ref)
            if row is None:
                return None
            dup = s.execute(
                select(INV.c.cycle).where(
                    INV.c.subscription_id == row.id, INV.c.provider_invoice_ref == invoice_ref
                )
            ).first()
            if dup is not None:
                return {
                    "subscription_id": row.id,
                    "changed": False,
                    "reason": "duplicate",
                    "cycle": dup.cycle,
                }
            start = period_start or row.current_period_end
            end = period_end or domain.add_periods(start, self._period(row), 1)
            if row.status in (Status.CANCELED, Status.PAUSED) or start < row.current_period_end - _SLACK:
                # an earlier (or the current) period, or a subscription not running here: the
                # money is recorded by payments, nothing moves (no allowance again)
                return {"subscription_id": row.id, "changed": False, "reason": f"stale ({row.status})"}
            cycle = row.cycle + 1
            st = replace(_state(row, None), cancel_at_period_end=False)
            if st.status in (Status.TRIALING, Status.ACTIVE):
                st = domain.apply(st, Ev.PERIOD_ENDED).state
            st = domain.apply(st, Ev.INVOICE_OPENED, cycle=cycle).state
            move = domain.apply(st, Ev.SETTLED, cycle=cycle)
            listed = (currency or row.currency).upper()
            paid = amount if amount is not None else 0
            repo.insert_invoice(
                s,
                id=new_id("inv"),
                subscription_id=row.id,
                customer_id=row.customer_id,
                cycle=cycle,
                kind="renewal",
                seq=0,
                plan=row.plan,
                status="paid",
                provider=provider,
                provider_invoice_ref=invoice_ref,
                provider_payment_ref=invoice_ref,
                listed_currency=listed,
                listed_amount=paid,
                currency=listed,
                amount=paid,
                rate=Decimal(1),
                rate_source=provider,
                rated_at=now,
                period_start=start,
                period_end=end,
                attempts=1,
                created_at=now,
                opened_at=now,
                paid_at=now,
                updated_at=now,
            )
            self.subs._update(
                s,
                row,
                now,
                status=move.state.status,
                cycle=cycle,
                current_period_start=start,
                current_period_end=end,
                cancel_at_period_end=False,
                renewal_failures=0,
                renewal_error=None,
                renewal_retry_at=None,
                next_action_at=None,
                period_price=paid if amount is not None else row.period_price,
            )
            _, current = self.subs._customer_plan(s, row.customer_id)
            if current != row.plan:  # back on the plan (it was dropped meanwhile)
                self.subs.plans.change_plan_fn(row.customer_id, row.plan)(s)
                self.subs.events.emit(
                    s, SubscriptionPlanChanged(row.id, row.customer_id, row.plan, current, "reactivated")
                )
            self.subs.plans.refresh_allowance_fn(row.customer_id)(s)  # grants cycle, once
            inv = repo.invoice_of_cycle(s, row.id, cycle)
            self.subs.events.emit(
                s,
                SubscriptionRenewed(
                    row.id, row.customer_id, inv.id, cycle, iso(end) or "", row.status == Status.LAPSED
                ),
            )
            return {"subscription_id": row.id, "changed": True, "cycle": cycle, "invoice_id": inv.id}

        return Command(fn)

    def past_due_fn(self, provider: str, ref: str) -> Command[dict[str, Any] | None]:
        """The provider could not collect the next period: ``past_due`` (the customer keeps the
        plan; the provider's own retries decide; its end cancels)."""

        def fn(s: Tx) -> dict[str, Any] | None:
            now = self.subs.clock.now()
            row = self._by_ref(s, provider, ref)
            if row is None:
                return None
            if row.status not in (Status.TRIALING, Status.ACTIVE):
                return {"subscription_id": row.id, "changed": False, "status": row.status}
            domain.apply(replace(_state(row, None), cancel_at_period_end=False), Ev.PERIOD_ENDED)
            self.subs._update(s, row, now, status=Status.PAST_DUE, next_action_at=None)
            grace = row.current_period_end + self.subs._grace(row)
            self.subs.events.emit(
                s, SubscriptionPastDue(row.id, row.customer_id, row.cycle + 1, iso(grace) or "")
            )
            return {"subscription_id": row.id, "changed": True, "status": Status.PAST_DUE.value}

        return Command(fn)

    def ended_fn(self, provider: str, ref: str) -> Command[dict[str, Any] | None]:
        """The provider ended the subscription: canceled (entitlements dropped as for a cancel)."""

        def fn(s: Tx) -> dict[str, Any] | None:
            now = self.subs.clock.now()
            row = self._by_ref(s, provider, ref)
            if row is None:
                return None
            if row.status == Status.CANCELED:
                return {"subscription_id": row.id, "changed": False, "suspended_keys": []}
            suspended = self.subs._cancel_locked(s, row, now, at_period_end=False)
            return {"subscription_id": row.id, "changed": True, "suspended_keys": suspended}

        return Command(fn)

    def paused_fn(self, provider: str, ref: str, *, paused: bool) -> Command[dict[str, Any] | None]:
        """The provider paused (or resumed) the subscription: the same as an operator's pause /
        resume. Already in that state: a no-op."""

        def fn(s: Tx) -> dict[str, Any] | None:
            now = self.subs.clock.now()
            row = self._by_ref(s, provider, ref)
            if row is None:
                return None
            try:
                base = {"subscription_id": row.id, "customer_id": row.customer_id}
                if paused:
                    suspended = self.pause_locked(s, row, now)
                    return {**base, "changed": True, "suspended_keys": suspended}
                keys = self.resume_locked(s, row, now)
                return {**base, "changed": True, "resume_keys": keys}
            except IllegalTransition:
                return {**base, "changed": False, "status": row.status}

        return Command(fn)

    def plan_moved_fn(self, provider: str, ref: str, plan: str) -> Command[dict[str, Any] | None]:
        """The provider moved the subscription to ``plan`` (the customer's plan is moved by the
        caller, through the plans domain): the local row follows."""

        def fn(s: Tx) -> dict[str, Any] | None:
            now = self.subs.clock.now()
            row = self._by_ref(s, provider, ref)
            if row is None or row.plan == plan or row.status == Status.CANCELED:
                return None if row is None else {"subscription_id": row.id, "changed": False}
            self.subs._update(s, row, now, plan=plan, period_price=None, next_action_at=None)
            self.subs.events.emit(
                s, SubscriptionPlanChanged(row.id, row.customer_id, plan, row.plan, "provider")
            )
            return {"subscription_id": row.id, "changed": True}

        return Command(fn)

    def _period(self, row: Any) -> str:
        plan = self.subs.catalog().plan(row.plan)
        return plan.period if plan is not None else "month"


_SLACK = timedelta(days=1)  # a provider's period start may differ from ours by clock skew
