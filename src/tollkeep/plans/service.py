"""Plans use cases: a customer's plan, its allowance each period, the free → paid carry-over.

Allowances are granted through the ledger's grant call (:func:`tollkeep.ledger.grant_once`)
with a key per plan and period, so granting one twice is impossible whoever asks first: the
ledger's usage path (lazily, before a charge, through the ``before_spend`` hook it is given),
the renewal job, or a plan change.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tollkeep import ledger as ledger_repo
from tollkeep.audit import record
from tollkeep.catalog import Catalog
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, SystemClock, period_bounds
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.ledger import EntryKind, GrantMeta, GrantSource, OpKind, WalletState, grant_once, new_grant
from tollkeep.plans import repository as repo
from tollkeep.plans.domain import (
    FAR_FUTURE,
    allowance_period,
    carries_over,
    follows_subscription,
    usage_periods,
)
from tollkeep.plans.events import PlanChanged

__all__ = ["PlanService", "ensure_allowance", "sync_usage_periods"]


def ensure_allowance(s: Tx, w: Any, st: WalletState, meta: GrantMeta, cat: Catalog, now: Any) -> None:
    """Grant the current period's plan allowance if it is not granted yet (idempotent by period).

    ``w`` is the locked wallet row (with its customer's ``plan``); the grant goes into ``st``,
    which the caller persists in the same unit of work."""
    if not w.plan or (w.allowance_until is not None and w.allowance_until > now):
        return
    plan = cat.plan(w.plan)
    billing = repo.billing_period(s, w.customer_id)
    if follows_subscription(plan, billing):
        assert billing is not None
        period = allowance_period(plan, now, billing)
        if period is None:
            # not in the paid cycle: look again when it starts, or (over, the next one unpaid)
            # when the subscription says a new cycle was paid (refresh_allowance_fn)
            until = billing.start if now < billing.start else FAR_FUTURE
            repo.set_allowance_state(s, w.id, now, allowance_until=until)
            return
    else:
        period = allowance_period(plan, now)
    if period is None:
        # nothing to grant: look again next month (or at the next plan change)
        repo.set_allowance_state(s, w.id, now, allowance_until=period_bounds("month", now)[1])
        return
    assert plan is not None
    # once per plan and period: a lifetime allowance is granted once; coming back to a plan
    # within a period does not grant it again
    grant_once(
        s,
        w,
        st,
        meta,
        kind=OpKind.ALLOWANCE,
        key=period.key,
        amount=period.amount,
        source=GrantSource.PLAN_ALLOWANCE,
        now=now,
        catalog_version=cat.version,
        priority=period.priority,
        effective_at=period.start or now,
        expires_at=period.end,
        note=f"plan {period.plan} allowance {period.period}",
    )
    repo.set_allowance_state(s, w.id, now, allowance_until=period.until)


def sync_usage_periods(s: Tx, wallet_id: str, cat: Catalog, now: datetime) -> None:
    """Make the wallet carry the periods its caps and tier counters count: those of the
    subscription billing the customer's plan now, or none (calendar). Called in the unit of
    work of every move that can change them (a plan change, a subscription's start, a cycle's
    allowance, an upgrade), after the move: the ledger reads them with its lock, no query."""
    w = ledger_repo.lock_wallet(s, wallet_id)
    plan = cat.plan(w.plan) if w.plan else None
    billing = repo.billing_period(s, w.customer_id)
    repo.set_usage_periods(s, w, now, usage_periods(w.plan, plan, billing))


def close_allowances(st: WalletState, now: datetime, op_id: str) -> int:
    """End, in operation ``op_id``, every allowance grant of ``st`` not yet ended (also one spent
    to 0 or wholly held: credits an open hold gives back later must not revive it); returns the
    credits closed."""
    closing = [
        g for g in st.grants.values() if g.source == GrantSource.PLAN_ALLOWANCE and g.ended(now) is None
    ]
    return sum(st.close(g.id, now, kind=EntryKind.PLAN_CHANGE, operation_id=op_id) for g in closing)


class PlanService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.events = events or EventBus()  # PlanChanged goes out here

    # ---- plan changes -----------------------------------------------------------------------------
    def change_plan(
        self, customer_id: str, plan_key: str | None, *, actor: Actor | None = None
    ) -> dict[str, Any]:
        """Move a customer to another plan. Allowance grants of the old plan end now; moving from a
        free plan to a paid one carries the unused free allowance into a durable grant, once."""
        return self.executor.call(self.change_plan_fn(customer_id, plan_key, actor=actor), key=customer_id)

    def change_plan_fn(
        self, customer_id: str, plan_key: str | None, *, actor: Actor | None = None, initial: bool = False
    ) -> Callable[[Tx], dict[str, Any]]:
        """``initial``: the plan a customer starts on, set in their sign-up's unit of work (no
        ``PlanChanged``: the sign-up is the event)."""
        cat = self.catalog()
        new_plan = cat.plan(plan_key) if plan_key is not None else None
        if plan_key is not None and new_plan is None:
            raise InvalidInput(f"unknown plan {plan_key!r}", code="unknown_plan")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = ledger_repo.lock_wallet_of_customer(s, customer_id)
            if w is None:
                raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
            if w.plan == plan_key:
                return {"customer_id": customer_id, "plan": plan_key, "carried_over": 0, "changed": False}
            old_plan = cat.plan(w.plan) if w.plan else None
            balance_before = ledger_repo.load_state(s, w).balance(now) if actor is not None else None
            # every allowance grant not yet ended closes, also one spent to 0 or wholly held:
            # credits an open hold gives back later must not revive it
            st = ledger_repo.load_state(s, w, grant_ids=ledger_repo.open_allowance_grant_ids(s, w.id, now))
            op_id = new_id("op")
            carry = carries_over(old_plan, new_plan, done_before=bool(w.carryover_done))
            closed_total = close_allowances(st, now, op_id)
            meta: GrantMeta = {}
            carried = closed_total if carry else 0
            if carried:
                new_grant(
                    st,
                    meta,
                    amount=carried,
                    source=GrantSource.PROMO,
                    now=now,
                    operation_id=op_id,
                    note=f"unused {old_plan.key if old_plan else ''} allowance carried over",
                )
            ledger_repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=customer_id,
                kind=OpKind.PLAN_CHANGE,
                idempotency_key=op_id,
                amount=carried,
                # journal of this operation: -closed (allowances ended) +carried (a new grant)
                properties={"from": w.plan, "to": plan_key, "closed": closed_total},
                catalog_version=cat.version,
                created_at=now,
            )
            repo.set_customer_plan(s, customer_id, plan_key, now)
            repo.set_allowance_state(
                s, w.id, now, allowance_until=None, carryover_done=bool(w.carryover_done or carry)
            )
            ledger_repo.persist(s, st, now, grant_meta=meta)
            w2 = ledger_repo.lock_wallet(s, w.id)
            ensure_allowance(s, w2, st, meta, cat, now)
            ledger_repo.persist(s, st, now, grant_meta=meta)
            sync_usage_periods(s, w.id, cat, now)
            out = {"customer_id": customer_id, "plan": plan_key, "carried_over": carried, "changed": True}
            if not initial:
                self.events.emit(s, PlanChanged(customer_id, plan_key, w.plan, carried))
            if actor is not None:
                record(
                    s,
                    actor,
                    "plan.change",
                    ("customer", customer_id),
                    before={"plan": w.plan, "balance": balance_before},
                    after={**out, "closed": closed_total, "balance": st.balance(now)},
                    at=now,
                )
            return out

        return fn

    def upgrade_in_cycle_fn(
        self, customer_id: str, plan_key: str, *, key: str, extra: int, until: datetime
    ) -> Callable[[Tx], dict[str, Any]]:
        """Inside the caller's unit of work: a subscription moves the customer to ``plan_key`` in
        the middle of a paid cycle ending at ``until``. The allowance granted for the cycle stays
        (what was consumed stays consumed) and ``extra`` credits (the new plan's allowance minus
        the old one's) are granted once under ``key``, until the cycle ends; the new plan's
        full allowance comes with the next cycle. Journaled as a plan change and a grant."""
        cat = self.catalog()
        if cat.plan(plan_key) is None:
            raise InvalidInput(f"unknown plan {plan_key!r}", code="unknown_plan")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = ledger_repo.lock_wallet_of_customer(s, customer_id)
            if w is None:
                raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
            previous = w.plan
            st = ledger_repo.load_state(s, w)
            meta: GrantMeta = {}
            granted = (
                grant_once(
                    s,
                    w,
                    st,
                    meta,
                    kind=OpKind.ALLOWANCE,
                    key=key,
                    amount=extra,
                    source=GrantSource.PLAN_ALLOWANCE,
                    now=now,
                    catalog_version=cat.version,
                    expires_at=until,
                    note=f"plan {plan_key} allowance difference for the rest of the cycle",
                )
                if extra > 0
                else None
            )
            repo.set_customer_plan(s, customer_id, plan_key, now)
            repo.set_allowance_state(s, w.id, now, allowance_until=until)
            ledger_repo.persist(s, st, now, grant_meta=meta)
            sync_usage_periods(s, w.id, cat, now)
            if previous != plan_key:
                self.events.emit(s, PlanChanged(customer_id, plan_key, previous, 0))
            return {"plan": plan_key, "previous": previous, "granted": extra if granted is not None else 0}

        return fn

    def restart_allowance_fn(self, customer_id: str, *, reason: str) -> Callable[[Tx], int]:
        """Inside the caller's unit of work: end the customer's unended allowance grants and grant
        the current one again (a subscription starting on the plan the customer is already on:
        its cycle 1 replaces the calendar period's allowance, which would otherwise overlap it).
        Journaled as a plan change from the plan to itself; returns the credits closed."""
        cat = self.catalog()

        def fn(s: Tx) -> int:
            now = self.clock.now()
            w = ledger_repo.lock_wallet_of_customer(s, customer_id)
            if w is None:
                raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
            st = ledger_repo.load_state(s, w, grant_ids=ledger_repo.open_allowance_grant_ids(s, w.id, now))
            op_id = new_id("op")
            closed = close_allowances(st, now, op_id)
            ledger_repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=customer_id,
                kind=OpKind.PLAN_CHANGE,
                idempotency_key=op_id,
                amount=0,
                properties={"from": w.plan, "to": w.plan, "closed": closed, "reason": reason},
                catalog_version=cat.version,
                created_at=now,
            )
            repo.set_allowance_state(s, w.id, now, allowance_until=None)
            meta: GrantMeta = {}
            ledger_repo.persist(s, st, now, grant_meta=meta)
            ensure_allowance(s, ledger_repo.lock_wallet(s, w.id), st, meta, cat, now)
            ledger_repo.persist(s, st, now, grant_meta=meta)
            sync_usage_periods(s, w.id, cat, now)
            return closed

        return fn

    def refresh_allowance_fn(self, customer_id: str) -> Callable[[Tx], None]:
        """Inside the caller's unit of work: grant the customer's current allowance if it is due
        (a subscription's new cycle was paid: its allowance is granted now, once), and carry the
        subscription's periods on the wallet (caps and tier counters: ``sync_usage_periods``)."""
        cat = self.catalog()

        def fn(s: Tx) -> None:
            now = self.clock.now()
            w = ledger_repo.lock_wallet_of_customer(s, customer_id)
            if w is None:
                return
            if w.allowance_until is not None:
                # look again whatever it says (granting is once per key: nothing doubles)
                repo.set_allowance_state(s, w.id, now, allowance_until=None)
                w = ledger_repo.lock_wallet(s, w.id)
            st = ledger_repo.load_state(s, w)
            meta: GrantMeta = {}
            ensure_allowance(s, w, st, meta, cat, now)
            ledger_repo.persist(s, st, now, grant_meta=meta)
            sync_usage_periods(s, w.id, cat, now)

        return fn

    # ---- renewal ----------------------------------------------------------------------------------
    def renew_allowances(self, *, limit: int = 500) -> int:
        """Grant the new period's plan allowance to wallets whose allowance ran out (usage also
        does this lazily, so a missed run costs nothing but freshness of displayed balances).
        One unit of work per wallet, keyed by its customer; the scan is a read and does not
        queue on the writer. On PostgreSQL a wallet another transaction holds is skipped
        (``SKIP LOCKED``): several workers share the job, and what is skipped is renewed next run."""
        now = self.clock.now()
        with self.db.scope(write=False) as s:
            due = repo.wallets_due_for_allowance(s, now, limit)
        futures = [self.executor.submit(self._renew_fn(w.id), key=w.customer_id) for w in due]
        return sum(f.result() for f in futures)

    def _renew_fn(self, wallet_id: str) -> Callable[[Tx], int]:
        cat = self.catalog()

        def fn(s: Tx) -> int:
            now = self.clock.now()
            w = ledger_repo.try_lock_wallet(s, wallet_id)  # busy (another worker): next run
            if w is None or not w.plan or (w.allowance_until is not None and w.allowance_until > now):
                return 0
            st = ledger_repo.load_state(s, w)
            meta: GrantMeta = {}
            ensure_allowance(s, w, st, meta, cat, now)
            renewed = 1 if st.new_grants else 0
            ledger_repo.persist(s, st, now, grant_meta=meta)
            return renewed

        return fn
