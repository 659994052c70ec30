"""Subscriptions use cases: create, cancel (now or at period end), renew (the worker), settle an
invoice, lapse, reactivate.

Every move of a subscription goes through the state machine (:mod:`.domain`), in a unit of work
keyed by its customer that locks the subscription's row. A cycle's allowance is granted through
the plans domain (``refresh_allowance_fn``), keyed by subscription and cycle in the ledger
(``grant_once``), so an early, late or repeated settle never grants a cycle twice.

The renewal worker (:meth:`SubscriptionService.run_due`) claims due subscriptions (PostgreSQL:
``FOR UPDATE SKIP LOCKED`` and a lease) and, per subscription: ends the period (past_due, or
canceled when asked at period end), lapses it after the plan's grace, and creates the next
cycle's invoice: the listed price converted at a fresh rate (outside any transaction), the
local invoice (unique per subscription and cycle) stored as a draft with its rate audit, the
provider's invoice created (outside any transaction; the invoice id is its idempotency key),
then the invoice opened. A failure backs off (5 min, 30 min, 2 h, 6 h, ...) and stops after
``max_failures``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from tollkeep import ledger as ledger_api
from tollkeep.audit import record
from tollkeep.catalog import Catalog, Plan
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Conflict, InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import Command, WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.subscriptions import domain
from tollkeep.subscriptions import repository as repo
from tollkeep.subscriptions.codes import Codes
from tollkeep.subscriptions.domain import Event as Ev
from tollkeep.subscriptions.domain import IllegalTransition, Status, SubState
from tollkeep.subscriptions.events import (
    SubscriptionCanceled,
    SubscriptionCreated,
    SubscriptionLapsed,
    SubscriptionPastDue,
    SubscriptionPlanChanged,
    SubscriptionRenewalFailed,
    SubscriptionRenewalPending,
    SubscriptionRenewed,
)
from tollkeep.subscriptions.following import FOLLOWED, Following
from tollkeep.subscriptions.invoicing import InvoiceProvider, InvoiceRequest, ManualInvoicing
from tollkeep.subscriptions.models import Invoice, Subscription
from tollkeep.subscriptions.rates import FixedRates, RateSource
from tollkeep.subscriptions.upgrades import PlanChanges

if TYPE_CHECKING:  # injected: imported for types only (plans reads this domain's table)
    from tollkeep.keys import KeyService
    from tollkeep.plans import PlanService

__all__ = ["RenewalSettings", "SubscriptionService"]

log = logging.getLogger("tollkeep.subscriptions")

SUB = table_of(Subscription)
INV = table_of(Invoice)
LIVE = (Status.TRIALING, Status.ACTIVE, Status.PAST_DUE)
MAX_LIST = 500
_LICENCE_FIELDS = frozenset({"plan", "status", "current_period_end"})  # what a licence follows


@dataclass(frozen=True)
class RenewalSettings:
    invoice_currency: str | None = None  # None: invoices in the plan's listed currency
    retry_seconds: tuple[int, ...] = domain.BACKOFF_SECONDS
    max_failures: int = domain.MAX_RENEWAL_FAILURES
    lease_seconds: int = 120
    batch: int = 200


@dataclass(frozen=True)
class _InvoiceJob:
    """What the worker must invoice, decided under the subscription's lock."""

    sub_id: str
    customer_id: str
    cycle: int
    plan: str
    provider: str
    listed_currency: str
    listed_amount: int
    currency: str
    period_start: datetime
    period_end: datetime
    discount_code: str | None = None
    discount_amount: int = 0  # listed minor units off the list price (listed_amount is after it)


def _state(row: Any, open_cycle: int | None) -> SubState:
    return SubState(
        Status(row.status),
        cycle=row.cycle,
        cancel_at_period_end=bool(row.cancel_at_period_end),
        invoice_cycle=open_cycle,
        failures=row.renewal_failures,
    )


def _request(job: _InvoiceJob, invoice_id: str, amount: int) -> InvoiceRequest:
    """What the provider is asked to invoice for a renewal job."""
    what = f"{job.plan} cycle {job.cycle}"
    return InvoiceRequest(invoice_id, job.sub_id, job.customer_id, job.cycle, job.currency, amount, what)


def _err(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}")[:500]


class SubscriptionService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        catalog: Callable[[], Catalog],
        plans: PlanService,
        keys: KeyService,
        *,
        clock: Clock,
        events: EventBus,
        rates: RateSource | None = None,
        settings: RenewalSettings | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.catalog = catalog
        self.plans = plans
        self.keys = keys
        self.clock = clock
        self.events = events
        self.rates: RateSource = rates or FixedRates()
        self.settings = settings or RenewalSettings()
        self.providers: dict[str, InvoiceProvider] = {"manual": ManualInvoicing()}
        self.changes = PlanChanges(self)
        self.codes = Codes(self)
        self.changes.codes = self.codes
        self.following = Following(self)  # pause / resume; subscriptions a provider bills itself

    def register_provider(self, provider: InvoiceProvider) -> None:
        """Invoices of subscriptions with ``provider == provider.name`` are created by it."""
        self.providers[provider.name] = provider

    # ------------------------------------------------------------------ reads
    def _grace(self, row: Any) -> timedelta:
        plan = self.catalog().plan(row.plan)
        return timedelta(days=plan.grace_days if plan else 0)

    def view(self, s: Tx, row: Any) -> dict[str, Any]:
        open_inv = s.execute(
            select(INV.c.id, INV.c.cycle, INV.c.status)
            .where(
                INV.c.subscription_id == row.id, INV.c.kind == "renewal", INV.c.status.in_(("draft", "open"))
            )
            .order_by(INV.c.cycle.desc())
            .limit(1)
        ).first()
        stopped = row.renewal_failures >= self.settings.max_failures
        unpaid = row.status in (Status.PAST_DUE, Status.LAPSED)
        return {
            "id": row.id,
            "customer_id": row.customer_id,
            "plan": row.plan,
            "provider": row.provider,
            "status": row.status,
            "cycle": row.cycle,
            "current_period_start": iso(row.current_period_start),
            "current_period_end": iso(row.current_period_end),
            "grace_until": iso(row.current_period_end + self._grace(row)) if unpaid else None,
            "cancel_at_period_end": bool(row.cancel_at_period_end),
            "currency": row.currency,
            "invoice_currency": row.invoice_currency,
            "open_invoice": None
            if open_inv is None
            else {"id": open_inv.id, "cycle": open_inv.cycle, "status": open_inv.status},
            "renewal": {
                "failures": row.renewal_failures,
                "error": row.renewal_error,
                "next_attempt_at": None if stopped else iso(row.renewal_retry_at),
                "stopped": stopped,
            },
            "suspended_keys": list(row.suspended_keys or []),
            "period_price": self.changes.paid_per_period(row),
            "discount_code": row.discount_code,
            "scheduled_change": self._scheduled_view(s, row),
            "provider_ref": row.provider_ref,
            "paused_at": iso(row.paused_at),
            "started_at": iso(row.started_at),
            "trial_end": iso(row.anchor_at) if row.anchor_at > row.started_at else None,
            "canceled_at": iso(row.canceled_at),
            "lapsed_at": iso(row.lapsed_at),
            "created_at": iso(row.created_at),
            "updated_at": iso(row.updated_at),
        }

    def _scheduled_view(self, s: Tx, row: Any) -> dict[str, Any] | None:
        ch = self.changes.scheduled(s, row.id)
        if ch is None:
            return None
        return {"id": ch.id, "plan": ch.to_plan, "kind": ch.kind, "effective_at": iso(ch.effective_at)}

    @staticmethod
    def invoice_view(row: Any) -> dict[str, Any]:
        return {
            "id": row.id,
            "subscription_id": row.subscription_id,
            "customer_id": row.customer_id,
            "kind": row.kind,
            "cycle": row.cycle,
            "plan": row.plan,
            "status": row.status,
            "provider": row.provider,
            "provider_invoice_ref": row.provider_invoice_ref,
            "provider_payment_ref": row.provider_payment_ref,
            "pay_url": row.pay_url,
            "currency": row.currency,
            "amount": row.amount,
            "discount": None
            if not row.discount_amount
            else {"code": row.discount_code, "listed_amount_off": row.discount_amount},
            "period_start": iso(row.period_start),
            "period_end": iso(row.period_end),
            "rate_audit": {
                "listed_currency": row.listed_currency,
                "listed_amount": row.listed_amount,
                "rate": format(row.rate, "f"),
                "rate_source": row.rate_source,
                "rated_at": iso(row.rated_at),
                "rounding": "half_up",
            },
            "attempts": row.attempts,
            "last_error": row.last_error,
            "created_at": iso(row.created_at),
            "opened_at": iso(row.opened_at),
            "paid_at": iso(row.paid_at),
            "voided_at": iso(row.voided_at),
        }

    def _row(self, s: Tx, sub_id: str, *, lock: bool = False) -> Any:
        row = repo.get_subscription(s, sub_id, lock=lock)
        if row is None:
            raise NotFound(f"no subscription {sub_id!r}", code="subscription_not_found")
        return row

    def get(self, sub_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return self.view(s, self._row(s, sub_id))

    def list_subscriptions(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if status is not None and status not in set(Status):
            raise InvalidInput(f"unknown status {status!r}", code="invalid_status")
        q = select(SUB).order_by(SUB.c.created_at.desc(), SUB.c.id.desc()).limit(max(1, min(limit, MAX_LIST)))
        if customer_id:
            q = q.where(SUB.c.customer_id == customer_id)
        if status:
            q = q.where(SUB.c.status == status)
        with self.db.scope(write=False) as s:
            return [self.view(s, r) for r in s.execute(q).all()]

    def invoices(self, sub_id: str) -> list[dict[str, Any]]:
        with self.db.scope(write=False) as s:
            self._row(s, sub_id)
            rows = s.execute(
                select(INV)
                .where(INV.c.subscription_id == sub_id)
                .order_by(INV.c.cycle, INV.c.kind, INV.c.seq)
            ).all()
            return [self.invoice_view(r) for r in rows]

    def list_invoices(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        if status is not None and status not in ("draft", "open", "paid", "void"):
            raise InvalidInput(f"unknown invoice status {status!r}", code="invalid_status")
        q = select(INV).order_by(INV.c.created_at.desc(), INV.c.id.desc()).limit(max(1, min(limit, MAX_LIST)))
        if customer_id:
            q = q.where(INV.c.customer_id == customer_id)
        if status:
            q = q.where(INV.c.status == status)
        with self.db.scope(write=False) as s:
            return [self.invoice_view(r) for r in s.execute(q).all()]

    def get_invoice(self, invoice_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            row = repo.get_invoice(s, invoice_id)
        if row is None:
            raise NotFound(f"no invoice {invoice_id!r}", code="invoice_not_found")
        return self.invoice_view(row)

    # ------------------------------------------------------------------ helpers under the lock
    @staticmethod
    def _open_cycle(s: Tx, row: Any) -> int | None:
        """The cycle of the subscription's open invoice for its next cycle (None: none open)."""
        inv = repo.invoice_of_cycle(s, row.id, row.cycle + 1)
        return inv.cycle if inv is not None and inv.status == "open" else None

    def _next_action(
        self, row_status: str, row: Any, values: Mapping[str, Any], now: datetime
    ) -> datetime | None:
        """When the worker must look at the subscription again, given its new ``values``."""
        status = values.get("status", row_status)
        period_end = values.get("current_period_end", row.current_period_end)
        if status in (Status.TRIALING, Status.ACTIVE):
            return period_end
        if status in (Status.CANCELED, Status.PAUSED) or row.provider in FOLLOWED:
            return None  # paused, or renewed by its provider: the worker has nothing to do
        failures = values.get("renewal_failures", row.renewal_failures)
        retry = values.get("renewal_retry_at", row.renewal_retry_at)
        has_invoice = values.get("_has_invoice", False)
        wants_invoice = not has_invoice and failures < self.settings.max_failures
        times = []
        if wants_invoice:
            times.append(retry or now)
        if status == Status.PAST_DUE:
            times.append(period_end + self._grace(row))
        return min(times) if times else None

    def _update(self, s: Tx, row: Any, now: datetime, **values: Any) -> None:
        has_invoice = values.pop("_has_invoice", None)
        probe = dict(values)
        if has_invoice is not None:
            probe["_has_invoice"] = has_invoice
        if "next_action_at" not in values:
            values["next_action_at"] = self._next_action(row.status, row, probe, now)
        repo.update_subscription(s, row.id, updated_at=now, **values)
        if _LICENCE_FIELDS.intersection(values) and self._licensed(row.plan, values.get("plan", row.plan)):
            self._follow_licence(s, row.id, now)  # the licence follows, in this transaction

    def _licensed(self, *plan_keys: str) -> bool:
        """Whether a subscription moving between these plans can have a licence to move (one
        that left a licensed plan was expired at that move; nothing to look up otherwise)."""
        if self.changes.licenses is None:
            return False
        cat = self.catalog()
        return any((p := cat.plan(k)) is not None and p.license for k in plan_keys)

    def _customer_plan(self, s: Tx, customer_id: str) -> tuple[Any, str | None]:
        w = ledger_api.lock_wallet_of_customer(s, customer_id)
        if w is None:
            raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
        return w, w.plan

    def _drop_plan(self, s: Tx, row: Any, reason: str) -> tuple[str | None, list[str]]:
        """The customer leaves the subscribed plan for the catalog's default plan (if they are
        still on it), keys suspended when the plan says so. Returns (the plan now, keys
        suspended)."""
        cat = self.catalog()
        _, current = self._customer_plan(s, row.customer_id)
        if current != row.plan:
            return current, []
        to = cat.default_plan
        self.plans.change_plan_fn(row.customer_id, to)(s)
        self.events.emit(s, SubscriptionPlanChanged(row.id, row.customer_id, to, row.plan, reason))
        plan = cat.plan(row.plan)
        suspended: list[str] = []
        if plan is not None and plan.suspend_keys_on_cancel:
            suspended = list(self.keys.suspend_customer_keys_fn(row.customer_id)(s))
        return to, suspended

    # ------------------------------------------------------------------ create
    def _listed(self, plan: Plan, currency: str | None) -> str:
        priced = sorted(c for c, amount in plan.prices.items() if amount > 0)
        if not priced:
            raise InvalidInput(
                f"plan {plan.key!r} has no price: nothing to subscribe to", code="plan_not_billable"
            )
        if currency is not None:
            match = [c for c in priced if c.lower() == currency.lower()]
            if not match:
                raise InvalidInput(
                    f"plan {plan.key!r} has no {currency} price (it has {', '.join(priced)})",
                    code="unsupported_currency",
                )
            return match[0]
        pref = self.settings.invoice_currency
        match = [c for c in priced if pref and c.lower() == pref.lower()]
        return match[0] if match else priced[0]

    def create(
        self,
        customer_id: str,
        plan_key: str,
        *,
        provider: str = "manual",
        currency: str | None = None,
        code: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Subscribe a customer to a plan: cycle 1 starts now (``trialing`` for the plan's
        ``trial_days``, else ``active``); the customer moves to the plan and gets cycle 1's
        allowance. A customer has one live subscription (409 ``subscription_exists``); a lapsed
        one is canceled by a new one."""
        cat = self.catalog()
        plan = cat.plan(plan_key)
        if plan is None:
            raise InvalidInput(f"unknown plan {plan_key!r}", code="unknown_plan")
        if provider not in self.providers:
            raise InvalidInput(
                f"provider {provider!r} cannot invoice subscriptions "
                f"(known: {', '.join(sorted(self.providers))})",
                code="unsupported_provider",
            )
        listed = self._listed(plan, currency)
        invoice_currency = (self.settings.invoice_currency or listed).upper()

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            self._customer_plan(s, customer_id)
            for other in s.execute(
                select(SUB)
                .where(SUB.c.customer_id == customer_id, SUB.c.status != Status.CANCELED)
                .with_for_update()
            ).all():
                if other.status in LIVE or other.status == Status.PAUSED:  # paused: resume or cancel it
                    raise Conflict(
                        f"customer {customer_id!r} already has subscription {other.id} ({other.status})",
                        code="subscription_exists",
                        details={"subscription_id": other.id},
                    )
                self._cancel_locked(s, other, now, at_period_end=False)
            trial = timedelta(days=plan.trial_days)
            anchor = now + trial
            price = int(plan.prices.get(listed.lower(), 0))
            code_row = self.codes.check(s, code, plan.key, listed, now) if code else None
            if code_row is not None:  # cycle 1 is paid at the discounted price (the credit base)
                price = domain.discounted(price, listed, self.codes._discount(code_row))
            start, end = domain.cycle_bounds(now, anchor, plan.period, 1)
            sid = new_id("sub")
            status = Status.TRIALING if trial else Status.ACTIVE
            repo.insert_subscription(
                s,
                id=sid,
                customer_id=customer_id,
                plan=plan.key,
                provider=provider,
                status=status,
                cycle=1,
                started_at=now,
                anchor_at=anchor,
                current_period_start=start,
                current_period_end=end,
                cancel_at_period_end=False,
                currency=listed.upper(),
                invoice_currency=invoice_currency,
                next_action_at=end,
                renewal_failures=0,
                suspended_keys=[],
                period_price=0 if trial else price,
                created_at=now,
                updated_at=now,
            )
            if code_row is not None:
                self.codes.redeem(s, code_row.code, customer_id, now, subscription_id=sid)
            _, current = self._customer_plan(s, customer_id)
            if current == plan.key:  # cycle 1's allowance replaces the calendar period's
                self.plans.restart_allowance_fn(customer_id, reason=f"subscription {sid}")(s)
            else:
                self.plans.change_plan_fn(customer_id, plan.key)(s)
                self.plans.refresh_allowance_fn(customer_id)(s)
            if self._licensed(plan.key):  # a plan with `license = true`: its licence, once
                self._follow_licence(s, sid, now)
            row = self._row(s, sid)
            self.events.emit(s, SubscriptionCreated(sid, customer_id, plan.key, status, iso(end) or ""))
            out = self.view(s, row)
            if actor is not None:
                record(s, actor, "subscription.create", ("subscription", sid), after=out, at=now)
            return out

        return self._with_licence(self.executor.call(Command(fn, customer_id)))

    # ------------------------------------------------------------------ licences follow the subscription
    def _follow_licence(self, s: Tx, sub_id: str, now: datetime) -> None:
        """Inside the subscription's unit of work: its licence (a plan with ``license = true``)
        is issued, extended to the period end + the plan's grace, moved to the plan's terms, or
        expired when it lapses or is canceled (``LicenseService.follow_subscription``)."""
        licenses = self.changes.licenses
        if licenses is None:
            return
        row = self._row(s, sub_id)
        licenses.follow_subscription(
            s,
            subscription_id=row.id,
            customer_id=row.customer_id,
            plan=self.catalog().plan(row.plan),
            live=row.status in LIVE,
            until=row.current_period_end + self._grace(row),
            now=now,
        )

    def _with_licence(self, out: dict[str, Any]) -> dict[str, Any]:
        """After the commit: a created subscription's answer carries its licence and key."""
        plan = self.catalog().plan(out["plan"])
        if self.changes.licenses is not None and plan is not None and plan.license:
            lic = self.changes.licenses.of_subscription(out["id"])
            if lic is not None:
                out["license"] = {"id": lic["id"], "key": lic["key"], "expires_at": lic["expires_at"]}
        return out

    # ------------------------------------------------------------------ cancel
    def _owner(self, table: Any, row_id: str) -> str | None:
        with self.db.scope(write=False) as s:
            r = s.execute(select(table.c.customer_id).where(table.c.id == row_id)).first()
        return None if r is None else r.customer_id

    def _cancel_locked(self, s: Tx, row: Any, now: datetime, *, at_period_end: bool) -> list[str]:
        domain.apply(_state(row, None), Ev.CANCEL)
        repo.void_open_invoices(s, row.id, now)
        self.changes.void_pending(s, row.id, now, scheduled_too=True)
        _, suspended = self._drop_plan(s, row, "canceled")
        self._update(
            s,
            row,
            now,
            status=Status.CANCELED,
            canceled_at=now,
            next_action_at=None,
            suspended_keys=[*(row.suspended_keys or []), *suspended],
        )
        self.events.emit(s, SubscriptionCanceled(row.id, row.customer_id, row.plan, at_period_end))
        return suspended

    def cancel(
        self, sub_id: str, *, at_period_end: bool = False, actor: Actor | None = None
    ) -> dict[str, Any]:
        """Cancel now (open invoices void, the customer back to the default plan, keys as the
        plan says) or at the end of the current period (no renewal invoice)."""

        def fn(s: Tx) -> tuple[dict[str, Any], bool]:
            now = self.clock.now()
            row = self._row(s, sub_id, lock=True)
            before = self.view(s, row)
            forget = False
            try:
                if at_period_end:
                    domain.apply(_state(row, self._open_cycle(s, row)), Ev.CANCEL_AT_PERIOD_END)
                    self._update(s, row, now, cancel_at_period_end=True)
                else:
                    forget = bool(self._cancel_locked(s, row, now, at_period_end=False))
            except IllegalTransition as exc:
                raise Conflict(
                    f"subscription {sub_id} is {row.status}: {exc}", code="subscription_not_cancelable"
                ) from None
            out = self.view(s, self._row(s, sub_id))
            if actor is not None:
                action = "subscription.cancel_at_period_end" if at_period_end else "subscription.cancel"
                record(s, actor, action, ("subscription", sub_id), before=before, after=out, at=now)
            return out, forget

        out, forget = self.executor.call(Command(fn, self._owner(SUB, sub_id)))
        if forget:
            self.keys.forget_customer(out["customer_id"])
        return out

    def keep(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Undo a cancel at period end: the subscription renews as usual."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            row = self._row(s, sub_id, lock=True)
            try:
                domain.apply(_state(row, self._open_cycle(s, row)), Ev.KEEP)
            except IllegalTransition as exc:
                raise Conflict(
                    f"subscription {sub_id} is {row.status}: {exc}", code="subscription_not_active"
                ) from None
            self._update(s, row, now, cancel_at_period_end=False)
            out = self.view(s, self._row(s, sub_id))
            if actor is not None:
                record(s, actor, "subscription.keep", ("subscription", sub_id), after=out, at=now)
            return out

        return self.executor.call(Command(fn, self._owner(SUB, sub_id)))

    def retry_renewal(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Restart invoice creation stopped after too many failures (the worker tries at once)."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            row = self._row(s, sub_id, lock=True)
            try:
                domain.apply(_state(row, self._open_cycle(s, row)), Ev.RETRY)
            except IllegalTransition as exc:
                raise Conflict(f"nothing to retry: {exc}", code="nothing_to_retry") from None
            self._update(s, row, now, renewal_failures=0, renewal_retry_at=now, next_action_at=now)
            out = self.view(s, self._row(s, sub_id))
            if actor is not None:
                record(s, actor, "subscription.retry_renewal", ("subscription", sub_id), after=out, at=now)
            return out

        return self.executor.call(Command(fn, self._owner(SUB, sub_id)))

    # ------------------------------------------------------------------ pause / resume
    def pause(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Pause: not renewed, not lapsed, the plan's entitlements dropped (``following.py``)."""
        return self.following.pause(sub_id, actor=actor)

    def resume(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Resume a paused subscription: cycle + 1 is due now (``following.py``)."""
        return self.following.resume(sub_id, actor=actor)

    # ------------------------------------------------------------------ settle
    def settle_invoice(
        self, invoice_id: str, provider_payment_ref: str | None = None, *, actor: Actor | None = None
    ) -> dict[str, Any]:
        """Settle an invoice in a unit of work of its own (see :meth:`settle_invoice_fn`)."""
        out = self.executor.call(self.settle_invoice_fn(invoice_id, provider_payment_ref, actor=actor))
        return self.after_settle(out)

    def after_settle(self, out: dict[str, Any]) -> dict[str, Any]:
        """After the settle's commit: the keys a lapse suspended are resumed (one revoked
        meanwhile stays revoked), and the subscription is added to the answer."""
        for key_id in out.pop("resume_keys", []):
            with suppress(Conflict, NotFound):
                self.keys.resume(key_id)
        for move in out.pop("_licences", []):  # licences follow the plan: same id, new terms
            self.changes.after_apply(out["invoice"]["customer_id"], move["from_plan"], move["plan"])
        out["subscription"] = self.get(out["invoice"]["subscription_id"])
        return out

    def settle_invoice_fn(
        self, invoice_id: str, provider_payment_ref: str | None = None, *, actor: Actor | None = None
    ) -> Command[dict[str, Any]]:
        """An invoice was paid (an operator for a manual one, or the payments applier when a
        provider's webhook says so). Idempotent: settling a paid invoice changes nothing
        (``changed`` false). Settling the next cycle's invoice renews the subscription (from
        past_due, or lapsed: reactivated, back on its plan) and grants that cycle's allowance,
        once. A void invoice (its subscription canceled): 409 ``invoice_void``.

        A command: the payments applier runs it inside the unit of work that applies a
        provider's "paid" webhook, then calls :meth:`after_settle` with its result after the
        commit."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            inv = repo.get_invoice(s, invoice_id, lock=True)
            if inv is None:
                raise NotFound(f"no invoice {invoice_id!r}", code="invoice_not_found")
            if inv.status == "paid":
                return {"invoice": self.invoice_view(inv), "changed": False, "resume_keys": []}
            if inv.status == "void":
                raise Conflict(f"invoice {invoice_id} is void", code="invoice_void")
            if inv.status != "open":
                raise Conflict(f"invoice {invoice_id} is not open yet", code="invoice_not_open")
            if inv.kind == "upgrade":
                repo.update_invoice(s, inv.id, provider_payment_ref=provider_payment_ref)
                done = self.changes.settle_upgrade(s, inv, now)
                inv2 = repo.get_invoice(s, inv.id)
                if actor is not None:
                    record(
                        s, actor, "invoice.settle", ("invoice", inv.id), after=self.invoice_view(inv2), at=now
                    )
                return {
                    "invoice": self.invoice_view(inv2),
                    "changed": True,
                    "applied": done["applied"],
                    "resume_keys": [],
                    "_licences": [done["change"]] if done["applied"] else [],
                }
            row = self._row(s, inv.subscription_id, lock=True)
            was = row.status
            try:
                move = domain.apply(_state(row, self._open_cycle(s, row)), Ev.SETTLED, cycle=inv.cycle)
            except IllegalTransition as exc:
                raise Conflict(str(exc), code="invoice_not_settleable") from None
            plan = self.catalog().plan(row.plan)
            period = plan.period if plan is not None else "month"
            start, end = domain.cycle_bounds(row.started_at, row.anchor_at, period, inv.cycle)
            repo.update_invoice(
                s,
                inv.id,
                status="paid",
                paid_at=now,
                provider_payment_ref=provider_payment_ref,
                updated_at=now,
            )
            moves_plan = inv.plan != row.plan and was != Status.LAPSED
            self._update(
                s,
                row,
                now,
                status=move.state.status,
                cycle=move.state.cycle,
                current_period_start=start,
                current_period_end=end,
                renewal_failures=0,
                renewal_error=None,
                renewal_retry_at=None,
                suspended_keys=[],
                plan=inv.plan,
                period_price=inv.listed_amount,
            )
            licences: list[dict[str, str]] = []
            if moves_plan:  # a scheduled change starts with this cycle
                self.changes.settle_renewal_change(s, row, inv, now)
                licences.append({"from_plan": row.plan, "plan": inv.plan})
            resume: list[str] = []
            if was == Status.LAPSED:
                _, current = self._customer_plan(s, row.customer_id)
                if current != inv.plan:
                    self.plans.change_plan_fn(row.customer_id, inv.plan)(s)
                    self.events.emit(
                        s, SubscriptionPlanChanged(row.id, row.customer_id, inv.plan, current, "reactivated")
                    )
                if inv.plan != row.plan:
                    self.changes.mark_applied(s, row.id, inv.plan, now)
                    licences.append({"from_plan": row.plan, "plan": inv.plan})
                resume = list(row.suspended_keys or [])
            self.plans.refresh_allowance_fn(row.customer_id)(s)  # grants cycle move.grant_cycle, once
            self.events.emit(
                s,
                SubscriptionRenewed(
                    row.id, row.customer_id, inv.id, inv.cycle, iso(end) or "", was == Status.LAPSED
                ),
            )
            inv2 = repo.get_invoice(s, inv.id)
            if actor is not None:
                record(s, actor, "invoice.settle", ("invoice", inv.id), after=self.invoice_view(inv2), at=now)
            return {
                "invoice": self.invoice_view(inv2),
                "changed": True,
                "resume_keys": resume,
                "_licences": licences,
            }

        return Command(fn, self._owner(INV, invoice_id))

    # ------------------------------------------------------------------ the renewal worker
    def run_due(self, *, limit: int | None = None) -> dict[str, int]:
        """One run of the renewal worker: claim due subscriptions and move each along. Each step
        is a unit of work per subscription (keyed by its customer); a step's units are submitted
        together so the writer commits them in batches, and the slow outside calls (the rate,
        the provider) happen between steps, in no transaction."""
        now = self.clock.now()
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        n = limit or self.settings.batch
        claimed = self.executor.call(lambda s: repo.claim_due(s, now, lease, n))
        counts = {
            "claimed": len(claimed),
            "invoiced": 0,
            "failed": 0,
            "past_due": 0,
            "lapsed": 0,
            "canceled": 0,
        }
        # 1. under each subscription's lock: end the period, cancel at period end, lapse
        steps = [
            (r, self.executor.submit(Command(partial(self._advance, sub_id=r.id), r.customer_id)))
            for r in claimed
        ]
        jobs: list[_InvoiceJob] = []
        for r, step in steps:
            try:
                job, forget, moved = step.result()
            except Exception:  # one subscription's problem does not stop the others
                log.exception("renewal of subscription %s failed", r.id)
                continue
            for what in moved:
                counts[what] += 1
            if forget:
                self.keys.forget_customer(r.customer_id)
            if job is not None:
                jobs.append(job)
        # 2. the rate (outside any transaction), then the local draft invoices
        failures: list[Future[None]] = []
        drafts = []
        for job in jobs:
            try:
                if job.provider not in self.providers:
                    raise RuntimeError(f"no invoice provider {job.provider!r} is configured")
                if job.listed_amount <= 0 and job.discount_amount <= 0:
                    raise RuntimeError(f"plan {job.plan!r} has no {job.listed_currency} price in the catalog")
                rate = self.rates.rate(job.listed_currency, job.currency, self.clock.now())
                amount = domain.convert(job.listed_amount, job.listed_currency, rate.value, job.currency)
            except Exception as exc:
                failures.append(self._submit_failed(job, None, _err(exc)))
                continue
            cmd = Command(partial(self._draft, job=job, rate=rate, amount=amount), job.customer_id)
            drafts.append((job, amount, self.executor.submit(cmd)))
        # 3. the provider's invoices (outside any transaction), then open them
        opened: list[Future[None]] = []
        free: list[str] = []
        for job, amount, draft in drafts:
            try:
                invoice_id = draft.result()
            except Exception:
                log.exception("renewal invoice of subscription %s failed", job.sub_id)
                continue
            if invoice_id is None:
                continue
            try:
                created = self.providers[job.provider].create_invoice(_request(job, invoice_id, amount))
            except Exception as exc:
                failures.append(self._submit_failed(job, invoice_id, _err(exc)))
                continue
            open_cmd = Command(
                partial(
                    self._opened, job=job, invoice_id=invoice_id, ref=created.ref, pay_url=created.pay_url
                ),
                job.customer_id,
            )
            opened.append(self.executor.submit(open_cmd))
            if amount == 0:  # a free period (a 100% code): nothing to pay, settled at once
                free.append(invoice_id)
        for futs, what in ((failures, "failed"), (opened, "invoiced")):
            for f in futs:
                try:
                    f.result()
                    counts[what] += 1
                except Exception:
                    log.exception("renewal step failed")
        for invoice_id in free:
            try:
                self.settle_invoice(invoice_id, "free")
            except Exception:
                log.exception("settling the free invoice %s failed", invoice_id)
        return counts

    def _submit_failed(self, job: _InvoiceJob, invoice_id: str | None, error: str) -> Future[None]:
        cmd = Command(partial(self._failed, job=job, invoice_id=invoice_id, error=error), job.customer_id)
        return self.executor.submit(cmd)

    def _advance(self, s: Tx, sub_id: str) -> tuple[_InvoiceJob | None, bool, list[str]]:
        """Under the lock: end the period, lapse; say whether an invoice must be created, whether
        keys were suspended (to forget from the cache) and what moved."""
        moved: list[str] = []
        now = self.clock.now()
        row = repo.get_subscription(s, sub_id, lock=True)
        if row is None:
            return None, False, moved
        if row.provider in FOLLOWED or row.status == Status.PAUSED:  # not the worker's to move
            repo.update_subscription(s, row.id, next_action_at=None)
            return None, False, moved
        forget = False
        st = _state(row, self._open_cycle(s, row))
        if st.status in (Status.TRIALING, Status.ACTIVE) and now >= row.current_period_end:
            move = domain.apply(st, Ev.PERIOD_ENDED)
            self.changes.void_pending(s, row.id, now)  # an upgrade unpaid in its period is void
            if move.state.status == Status.CANCELED:
                forget = bool(self._cancel_locked(s, row, now, at_period_end=True))
                moved.append("canceled")
                return None, forget, moved
            self._update(s, row, now, status=Status.PAST_DUE, renewal_failures=0, renewal_retry_at=now)
            grace_until = row.current_period_end + self._grace(row)
            self.events.emit(
                s, SubscriptionPastDue(row.id, row.customer_id, row.cycle + 1, iso(grace_until) or "")
            )
            moved.append("past_due")
            row = self._row(s, sub_id)
            st = _state(row, st.invoice_cycle)
        if st.status == Status.PAST_DUE and now >= row.current_period_end + self._grace(row):
            domain.apply(st, Ev.GRACE_EXPIRED)
            now_plan, suspended = self._drop_plan(s, row, "lapsed")
            self._update(
                s,
                row,
                now,
                status=Status.LAPSED,
                lapsed_at=now,
                suspended_keys=[*(row.suspended_keys or []), *suspended],
                _has_invoice=st.invoice_cycle is not None,
            )
            self.events.emit(s, SubscriptionLapsed(row.id, row.customer_id, row.plan, now_plan, suspended))
            moved.append("lapsed")
            forget = bool(suspended)
            row = self._row(s, sub_id)
            st = _state(row, st.invoice_cycle)
        wants = (
            st.status in (Status.PAST_DUE, Status.LAPSED)
            and st.invoice_cycle is None
            and st.failures < self.settings.max_failures
            and (row.renewal_retry_at is None or row.renewal_retry_at <= now)
        )
        if not wants:
            if st.status != Status.CANCELED:  # the claim's lease is replaced by the real next time
                self._update(s, row, now, _has_invoice=st.invoice_cycle is not None)
            return None, forget, moved
        scheduled = self.changes.scheduled(s, row.id)
        plan_key = scheduled.to_plan if scheduled is not None else row.plan
        plan = self.catalog().plan(plan_key)
        cycle = row.cycle + 1
        period = plan.period if plan is not None else "month"
        start, end = domain.cycle_bounds(row.started_at, row.anchor_at, period, cycle)
        list_price = plan.prices.get(row.currency.lower(), 0) if plan is not None else 0
        discount = self.codes.renewal_discount(s, row, plan_key)
        listed = domain.discounted(list_price, row.currency, discount)
        job = _InvoiceJob(
            row.id,
            row.customer_id,
            cycle,
            plan_key,
            row.provider,
            row.currency,
            listed,
            row.invoice_currency,
            start,
            end,
            row.discount_code if listed != list_price else None,
            list_price - listed,
        )
        if self._invoice_offline(s, job):
            moved.append("invoiced")
            return None, forget, moved
        # keep the claim (a lease) while the invoice is being made; the last step sets the time
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        self._update(s, row, now, next_action_at=lease)
        return job, forget, moved

    def _invoice_offline(self, s: Tx, job: _InvoiceJob) -> bool:
        """When neither the rate nor the provider needs an outside call (fixed rates, the manual
        provider), the renewal's invoice is drafted and opened in the period end's own unit of
        work: one commit per renewal instead of three. Anything unusual (no price, no rate, a
        free period to settle, a provider that raises) returns False and takes the usual path,
        which records the failure or settles after the commit."""
        provider = self.providers.get(job.provider)
        if not (getattr(provider, "offline", False) and getattr(self.rates, "offline", False)):
            return False
        if provider is None or job.listed_amount <= 0:
            return False
        try:
            rate = self.rates.rate(job.listed_currency, job.currency, self.clock.now())
            amount = domain.convert(job.listed_amount, job.listed_currency, rate.value, job.currency)
        except Exception:
            return False
        if amount <= 0:
            return False
        invoice_id = self._draft(s, job, rate, amount)
        if invoice_id is None:
            return False
        try:
            created = provider.create_invoice(_request(job, invoice_id, amount))
        except Exception:
            return False  # the draft stays; the usual path retries it and records the failure
        self._opened(s, job, invoice_id, created.ref, created.pay_url)
        return True

    def _draft(self, s: Tx, job: _InvoiceJob, rate: Any, amount: int) -> str | None:
        """The local invoice of ``job.cycle`` (unique per subscription and cycle), as a draft with
        its rate audit; an existing draft (a failed or interrupted attempt) gets the fresh rate."""
        now = self.clock.now()
        row = self._row(s, job.sub_id, lock=True)
        if row.status not in (Status.PAST_DUE, Status.LAPSED) or row.cycle + 1 != job.cycle:
            return None
        audit = {
            "listed_currency": job.listed_currency,
            "listed_amount": job.listed_amount,
            "currency": job.currency,
            "amount": amount,
            "rate": rate.value,
            "rate_source": rate.source[:64],
            "rated_at": rate.at,
            "plan": job.plan,
            "discount_code": job.discount_code,
            "discount_amount": job.discount_amount,
            "updated_at": now,
        }
        inv = repo.invoice_of_cycle(s, job.sub_id, job.cycle)
        if inv is not None:
            if inv.status != "draft":
                return None
            repo.update_invoice(s, inv.id, **audit)
            return str(inv.id)
        iid = new_id("inv")
        repo.insert_invoice(
            s,
            id=iid,
            subscription_id=job.sub_id,
            customer_id=job.customer_id,
            cycle=job.cycle,
            kind="renewal",
            seq=0,
            status="draft",
            provider=job.provider,
            period_start=job.period_start,
            period_end=job.period_end,
            attempts=0,
            created_at=now,
            **audit,
        )
        return iid

    def _opened(self, s: Tx, job: _InvoiceJob, invoice_id: str, ref: str | None, pay_url: str | None) -> None:
        now = self.clock.now()
        row = self._row(s, job.sub_id, lock=True)
        inv = repo.get_invoice(s, invoice_id, lock=True)
        if inv is None or inv.status != "draft":
            return
        try:
            domain.apply(_state(row, None), Ev.INVOICE_OPENED, cycle=inv.cycle)
        except IllegalTransition:  # settled or canceled meanwhile
            return
        repo.update_invoice(
            s,
            inv.id,
            status="open",
            provider_invoice_ref=ref,
            pay_url=pay_url,
            opened_at=now,
            attempts=inv.attempts + 1,
            last_error=None,
            updated_at=now,
        )
        self._update(
            s, row, now, renewal_failures=0, renewal_error=None, renewal_retry_at=None, _has_invoice=True
        )
        self.events.emit(
            s,
            SubscriptionRenewalPending(
                row.id, row.customer_id, inv.id, inv.cycle, inv.currency, inv.amount, pay_url
            ),
        )

    def _failed(self, s: Tx, job: _InvoiceJob, invoice_id: str | None, error: str) -> None:
        now = self.clock.now()
        row = self._row(s, job.sub_id, lock=True)
        try:
            move = domain.apply(
                _state(row, self._open_cycle(s, row)),
                Ev.INVOICE_FAILED,
                max_failures=self.settings.max_failures,
            )
        except IllegalTransition:
            return
        failures = move.state.failures
        stopped = failures >= self.settings.max_failures
        retry_at = None if stopped else domain.next_attempt(failures, now, self.settings.retry_seconds)
        if invoice_id is not None:
            inv = repo.get_invoice(s, invoice_id)
            if inv is not None:
                repo.update_invoice(s, inv.id, attempts=inv.attempts + 1, last_error=error, updated_at=now)
        self._update(s, row, now, renewal_failures=failures, renewal_error=error, renewal_retry_at=retry_at)
        self.events.emit(
            s, SubscriptionRenewalFailed(row.id, row.customer_id, failures, error, iso(retry_at), stopped)
        )
