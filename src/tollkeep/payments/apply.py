"""What a provider's actions do to tollkeep: grants, plan changes, take-backs - through the
ledger's, plans', customers' and keys' own units of work, all in ONE transaction with the inbox
row that records the outcome. Every money effect carries an idempotency key made of the
provider and its payment (or refund) id, and a ``payments`` / ``payment_refunds`` row unique on
that id: applying the same payment again, from a duplicate delivery, a replay, a reconcile or a
worker that crashed after the commit, changes nothing.

Subscriptions (through the runtime's :class:`SubscriptionsPort`, never by importing the
subscriptions service): a payment of one of our invoices (``PaymentSettled.invoice_id``, a
renewal or an upgrade invoice) settles it with ``settle_invoice_fn`` INSIDE this unit of work,
then ``after_settle`` runs after the commit (:attr:`Outcome.settled`). A subscription its
provider bills itself (Stripe) is followed: its checkout starts the local subscription, its paid
cycles renew it, a failed payment makes it past_due, its end cancels it, a pause pauses it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import select

from tollkeep.catalog import Catalog
from tollkeep.customers import CustomerService
from tollkeep.keys import KeyService
from tollkeep.kit.clock import Clock
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.ledger import LedgerService
from tollkeep.payments import repository as repo
from tollkeep.payments.events import PaymentFailedEvent, PaymentRefundedEvent, PaymentSucceeded
from tollkeep.payments.providers.base import (
    Action,
    Buyer,
    CannotApply,
    PaymentFailed,
    PaymentRefunded,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    Recorded,
    SubscriptionPaused,
)
from tollkeep.plans import PlanService
from tollkeep.subscriptions.models import Invoice

INV = table_of(Invoice)  # read only: the invoice a payment settles (the subscriptions domain writes it)

__all__ = ["Applier", "FollowingPort", "NotYet", "Outcome", "SubscriptionsPort", "credits_to_take_back"]

# record(s, customer_id, stage, source=, provider=, at=): the funnel's stage recorder
StageRecorder = Callable[..., None]


class NotYet(Exception):
    """The event refers to something not seen yet (a refund of a payment whose webhook has not
    arrived): retried later, like a provider outage."""


class FollowingPort(Protocol):
    """Subscriptions a provider bills itself (``subscriptions/following.py``); each returns a
    unit of work run inside the applier's; None: no such subscription here."""

    def start_fn(
        self,
        customer_id: str,
        plan_key: str,
        provider: str,
        ref: str,
        *,
        period_start: datetime | None = ...,
        period_end: datetime | None = ...,
        currency: str | None = ...,
        amount: int | None = ...,
    ) -> Command[dict[str, Any] | None]: ...

    def renewed_fn(
        self,
        provider: str,
        ref: str,
        *,
        invoice_ref: str,
        period_start: datetime | None,
        period_end: datetime | None,
        currency: str | None = ...,
        amount: int | None = ...,
    ) -> Command[dict[str, Any] | None]: ...

    def past_due_fn(self, provider: str, ref: str) -> Command[dict[str, Any] | None]: ...

    def ended_fn(self, provider: str, ref: str) -> Command[dict[str, Any] | None]: ...

    def paused_fn(self, provider: str, ref: str, *, paused: bool) -> Command[dict[str, Any] | None]: ...

    def plan_moved_fn(self, provider: str, ref: str, plan: str) -> Command[dict[str, Any] | None]: ...


class SubscriptionsPort(Protocol):
    """What the applier needs of the subscriptions service (plugged by the runtime)."""

    @property
    def following(self) -> FollowingPort: ...

    def settle_invoice_fn(
        self, invoice_id: str, provider_payment_ref: str | None = ...
    ) -> Command[dict[str, Any]]: ...


@dataclass
class Outcome:
    effects: list[dict[str, Any]] = field(default_factory=list)
    forget_keys_of: list[str] = field(default_factory=list)  # key caches to drop after the commit
    settled: list[dict[str, Any]] = field(default_factory=list)  # invoice settles: after_settle
    resume_keys: list[str] = field(default_factory=list)  # keys a resumed subscription gets back


def credits_to_take_back(credits: int, total: int, refunded_before: int, refunded_now: int) -> int:
    """Credits a refund takes back: the payment's credits in proportion to the money refunded so
    far, rounded DOWN, less what earlier refunds of it already asked for (so partial refunds
    add up to exactly ``credits`` once the whole payment is refunded, whatever their order)."""
    if credits <= 0 or total <= 0:
        return 0
    before = min(refunded_before, total)
    after = min(refunded_before + refunded_now, total)
    return credits * after // total - credits * before // total


class Applier:
    def __init__(
        self,
        *,
        ledger: LedgerService,
        plans: PlanService,
        customers: CustomerService,
        keys: KeyService,
        catalog: Callable[[], Catalog],
        clock: Clock,
        events: EventBus,
        record_stage: StageRecorder,
        subscriptions: SubscriptionsPort | None = None,
    ) -> None:
        self.ledger = ledger
        self.plans = plans
        self.customers = customers
        self.keys = keys
        self.catalog = catalog
        self.clock = clock
        self.events = events
        self.record_stage = record_stage
        self.subscriptions = subscriptions

    def unit(self, provider: str, inbox_id: str | None, actions: Sequence[Action]) -> Callable[[Tx], Outcome]:
        """One unit of work applying ``actions`` (the caller adds the inbox row's outcome to it)."""

        def fn(s: Tx) -> Outcome:
            out = Outcome()
            now = self.clock.now()
            for action in actions:
                out.effects.append(self._apply(s, provider, inbox_id, action, now, out))
            return out

        return fn

    # ---- one action ---------------------------------------------------------------------------
    def _apply(
        self, s: Tx, provider: str, inbox_id: str | None, a: Action, now: datetime, out: Outcome
    ) -> dict[str, Any]:
        if isinstance(a, PaymentSettled):
            if a.invoice_id:
                return self._settled_invoice(s, provider, inbox_id, a, now, out)
            return self._settled(s, provider, inbox_id, a, now)
        if isinstance(a, PlanChanged):
            cid = self._customer(s, provider, a.buyer, now, create=True)
            if self.catalog().plan(a.plan) is None:
                raise CannotApply(f"unknown plan {a.plan!r} (not in the catalog)", code="unknown_plan")
            if a.subscription_ref and self.subscriptions is not None:
                # first: the plans domain then grants the new plan's allowance for the followed
                # subscription's cycle, not for a calendar period overlapping the next cycle's
                self.subscriptions.following.plan_moved_fn(provider, a.subscription_ref, a.plan)(s)
            changed = self.plans.change_plan_fn(cid, a.plan)(s)
            self.record_stage(s, cid, "acquisition", source="provider", provider=provider, at=now)
            return {
                "action": "plan_changed",
                "customer_id": cid,
                "plan": a.plan,
                "changed": changed["changed"],
            }
        if isinstance(a, PlanCancelled):
            return self._cancelled(s, provider, a, now, out)
        if isinstance(a, PaymentFailed):
            effect = self._failed(s, provider, inbox_id, a, now)
            if a.subscription_ref and self.subscriptions is not None:
                moved = self.subscriptions.following.past_due_fn(provider, a.subscription_ref)(s)
                effect["subscription"] = moved
            return effect
        if isinstance(a, SubscriptionPaused):
            return self._paused(s, provider, a, out)
        if isinstance(a, PaymentRefunded):
            return self._refunded(s, provider, a, now)
        if isinstance(a, Recorded):
            return {"action": "recorded", "note": a.note, **dict(a.details)}
        raise CannotApply(f"unknown action {type(a).__name__}")

    def _customer(self, s: Tx, provider: str, buyer: Buyer, now: datetime, *, create: bool) -> str:
        """Our customer behind ``buyer``: the one named in our metadata, else the one linked to
        the provider account, else (``create``) a new one for that account or email."""
        if buyer.customer_id:
            if not self.customers.exists(s, buyer.customer_id):
                raise CannotApply(
                    f"unknown customer {buyer.customer_id!r} (metadata tollkeep_customer)",
                    code="unknown_customer",
                )
            if buyer.external_ref:
                repo.link_customer(s, provider, buyer.external_ref, buyer.customer_id, now)
            return buyer.customer_id
        if buyer.external_ref:
            linked = repo.linked_customer(s, provider, buyer.external_ref)
            if linked is not None:
                return linked
        if not create:
            raise CannotApply(
                f"no customer for {buyer.external_ref or buyer.email or 'this buyer'}",
                code="unknown_customer",
            )
        external = buyer.external_ref or (f"buyer:{buyer.email.strip().lower()}" if buyer.email else None)
        if external is None:
            raise CannotApply("the event names no customer, account or email", code="unknown_customer")
        cid = self.customers.id_by_external_id(s, external)
        if cid is None:
            cid = str(self.customers.create_fn(external, email=buyer.email, name=buyer.name)(s)["id"])
            self.record_stage(s, cid, "acquisition", source="payment", provider=provider, at=now)
        if buyer.external_ref:
            repo.link_customer(s, provider, buyer.external_ref, cid, now)
        return cid

    def _settled(
        self, s: Tx, provider: str, inbox_id: str | None, a: PaymentSettled, now: datetime
    ) -> dict[str, Any]:
        cat = self.catalog()
        pack = cat.pack(a.pack) if a.pack else None
        if a.pack and pack is None:
            raise CannotApply(f"unknown pack {a.pack!r} (not in the catalog)", code="unknown_pack")
        plan = cat.plan(a.plan) if a.plan else None
        if a.plan and plan is None:
            raise CannotApply(f"unknown plan {a.plan!r} (not in the catalog)", code="unknown_plan")
        cid = self._customer(s, provider, a.buyer, now, create=True)
        prior = repo.get_payment(s, provider, a.payment_id, lock=True)
        if prior is not None and prior.status != "failed":
            return {"action": "payment", "payment_id": a.payment_id, "duplicate": True, "customer_id": cid}
        following: dict[str, Any] | None = None
        if plan is not None and a.subscription_ref and self.subscriptions is not None:
            following = self._follow(s, provider, cid, plan.key, a)
        grant_id, credits = None, 0
        if pack is not None:
            granted = self.ledger.grant_fn(
                cid,
                pack.credits,
                source="purchase",
                idempotency_key=f"payment:{provider}:{a.payment_id}",
                expires_at=now + timedelta(days=pack.expires_days) if pack.expires_days else None,
                priority=pack.priority,
                note=f"{pack.name} ({provider} {a.payment_id})"[:500],
            )(s)
            grant_id, credits = granted["id"], pack.credits
        plan_changed = False
        # a followed subscription moves the plan itself (or, canceled or paused, does not)
        if plan is not None and not (following is not None and following.get("subscription_id")):
            plan_changed = bool(self.plans.change_plan_fn(cid, plan.key)(s)["changed"])
        currency = a.currency.lower() if a.currency else None
        values: dict[str, Any] = {
            "customer_id": cid,
            "checkout_id": a.checkout_id,
            "inbox_id": inbox_id,
            "status": "succeeded",
            "pack": a.pack,
            "plan": a.plan,
            "amount": a.amount,
            "currency": currency,
            "credits": credits,
            "grant_id": grant_id,
            "updated_at": now,
        }
        if prior is None:
            repo.insert_payment(
                s, id=new_id("pay"), provider=provider, payment_id=a.payment_id, created_at=now, **values
            )
        else:  # a payment that failed before (a retried invoice) and has now gone through
            repo.set_payment(s, prior.id, **values)
        if a.checkout_id:
            repo.mark_checkout_paid(s, a.checkout_id, payment_id=a.payment_id, now=now)
        self.record_stage(
            s, cid, "paid", source="checkout" if a.checkout_id else "provider", provider=provider, at=now
        )
        self.events.emit(
            s,
            PaymentSucceeded(
                cid,
                provider,
                a.payment_id,
                a.amount,
                values["currency"],
                a.pack,
                a.plan,
                credits,
                a.checkout_id,
                a.renewal,
            ),
        )
        return {
            "action": "payment",
            "payment_id": a.payment_id,
            "customer_id": cid,
            "credits": credits,
            "grant_id": grant_id,
            "plan": a.plan,
            "plan_changed": plan_changed,
            **({"subscription": following} if following is not None else {}),
        }

    def _follow(self, s: Tx, provider: str, cid: str, plan: str, a: PaymentSettled) -> dict[str, Any] | None:
        """A provider-billed subscription: its first payment starts the local subscription, a
        paid cycle renews it (once per provider invoice; one that is not newer changes nothing).
        Before the plan change, so the subscription's cycle grants the allowance."""
        assert self.subscriptions is not None and a.subscription_ref
        f = self.subscriptions.following
        ref = a.subscription_ref
        if a.renewal:
            renewed = f.renewed_fn(
                provider,
                ref,
                invoice_ref=a.payment_id,
                period_start=a.period_start,
                period_end=a.period_end,
                currency=a.currency,
                amount=a.amount,
            )(s)
            if renewed is not None:
                return renewed
        try:  # the first payment (or the first one seen): cycle 1
            started = f.start_fn(
                cid,
                plan,
                provider,
                ref,
                period_start=a.period_start,
                period_end=a.period_end,
                currency=a.currency,
                amount=a.amount,
            )(s)
        except Conflict as exc:  # another live subscription: the plan moves, nothing is followed
            return {"changed": False, "error": exc.code, "message": exc.message}
        if started is None:  # not a provider whose subscriptions are followed
            return None
        return {"subscription_id": started["subscription"]["id"], "changed": started["changed"]}

    def _settled_invoice(
        self, s: Tx, provider: str, inbox_id: str | None, a: PaymentSettled, now: datetime, out: Outcome
    ) -> dict[str, Any]:
        """A payment of one of our subscription invoices (renewal or upgrade): recorded once
        (``payments`` row unique on the provider's payment id) and the invoice settled in this
        unit of work; ``after_settle`` after the commit. A duplicate or a replay is a no-op; so
        is a settle of an invoice already paid (the subscriptions service says ``changed``
        false: an upgrade already applied is not applied again)."""
        if self.subscriptions is None:
            raise CannotApply("subscriptions are not available here", code="unknown_invoice")
        inv = s.execute(select(INV).where(INV.c.id == a.invoice_id)).first()
        if inv is None:
            raise CannotApply(
                f"unknown invoice {a.invoice_id!r} (metadata tollkeep_invoice)", code="unknown_invoice"
            )
        cid = inv.customer_id
        prior = repo.get_payment(s, provider, a.payment_id, lock=True)
        if prior is not None and prior.status != "failed":
            return {
                "action": "invoice_payment",
                "payment_id": a.payment_id,
                "duplicate": True,
                "customer_id": cid,
            }
        if a.currency and a.currency.lower() != str(inv.currency).lower():
            raise CannotApply(
                f"payment {a.payment_id} is in {a.currency}, invoice {inv.id} in {inv.currency}",
                code="currency_mismatch",
            )
        if a.amount is not None and a.amount < int(inv.amount):
            raise CannotApply(
                f"payment {a.payment_id} of {a.amount} is less than invoice {inv.id}'s {inv.amount}",
                code="underpaid",
            )
        try:
            settled = self.subscriptions.settle_invoice_fn(str(inv.id), a.payment_id)(s)
        except (Conflict, NotFound) as exc:  # void, not settleable now (paused): failed, replayable
            raise CannotApply(f"invoice {inv.id}: {exc.message}", code=exc.code) from None
        currency = a.currency.lower() if a.currency else str(inv.currency).lower()
        values: dict[str, Any] = {
            "customer_id": cid,
            "checkout_id": None,
            "inbox_id": inbox_id,
            "status": "succeeded",
            "pack": None,
            "plan": inv.plan,
            "amount": a.amount if a.amount is not None else int(inv.amount),
            "currency": currency,
            "credits": 0,
            "grant_id": None,
            "updated_at": now,
        }
        if prior is None:
            repo.insert_payment(
                s, id=new_id("pay"), provider=provider, payment_id=a.payment_id, created_at=now, **values
            )
        else:
            repo.set_payment(s, prior.id, **values)
        if settled.get("changed"):
            out.settled.append(settled)
        self.events.emit(
            s,
            PaymentSucceeded(
                cid,
                provider,
                a.payment_id,
                values["amount"],
                currency,
                None,
                inv.plan,
                0,
                None,
                inv.kind == "renewal",
            ),
        )
        return {
            "action": "invoice_payment",
            "payment_id": a.payment_id,
            "customer_id": cid,
            "invoice_id": inv.id,
            "kind": inv.kind,
            "changed": bool(settled.get("changed")),
            **({"applied": settled["applied"]} if "applied" in settled else {}),
        }

    def _paused(self, s: Tx, provider: str, a: SubscriptionPaused, out: Outcome) -> dict[str, Any]:
        effect: dict[str, Any] = {"action": "subscription_paused" if a.paused else "subscription_resumed"}
        if self.subscriptions is None:
            return {**effect, "changed": False, "note": "subscriptions are not available here"}
        res = self.subscriptions.following.paused_fn(provider, a.subscription_ref, paused=a.paused)(s)
        if res is None:
            return {**effect, "changed": False, "note": f"no subscription {a.subscription_ref} here"}
        if res.get("suspended_keys"):
            out.forget_keys_of.append(res["customer_id"])
        out.resume_keys.extend(res.get("resume_keys", []))
        return {**effect, **{k: v for k, v in res.items() if k != "resume_keys"}}

    def _cancelled(
        self, s: Tx, provider: str, a: PlanCancelled, now: datetime, out: Outcome
    ) -> dict[str, Any]:
        cid = self._customer(s, provider, a.buyer, now, create=False)
        if a.subscription_ref and self.subscriptions is not None:
            ended = self.subscriptions.following.ended_fn(provider, a.subscription_ref)(s)
            if ended is not None and ended.get("suspended_keys"):
                out.forget_keys_of.append(cid)
        cat = self.catalog()
        current = self.customers.plan_of(s, cid)
        if a.plan is not None and current != a.plan:
            return {"action": "plan_cancelled", "customer_id": cid, "changed": False, "plan": current}
        to = cat.default_plan
        changed = self.plans.change_plan_fn(cid, to)(s)["changed"]
        old = cat.plan(current) if current else None
        suspended: list[str] = []
        if old is not None and old.suspend_keys_on_cancel:
            suspended = self.keys.suspend_customer_keys_fn(cid)(s)
            out.forget_keys_of.append(cid)
        return {
            "action": "plan_cancelled",
            "customer_id": cid,
            "changed": changed,
            "plan": to,
            "suspended_keys": suspended,
        }

    def _failed(
        self, s: Tx, provider: str, inbox_id: str | None, a: PaymentFailed, now: datetime
    ) -> dict[str, Any]:
        try:
            cid: str | None = self._customer(s, provider, a.buyer, now, create=False)
        except CannotApply:
            cid = None
        prior = repo.get_payment(s, provider, a.payment_id, lock=True)
        if prior is None and cid is not None:
            repo.insert_payment(
                s,
                id=new_id("pay"),
                provider=provider,
                payment_id=a.payment_id,
                customer_id=cid,
                checkout_id=None,
                inbox_id=inbox_id,
                status="failed",
                pack=None,
                plan=None,
                amount=a.amount,
                currency=a.currency.lower() if a.currency else None,
                credits=0,
                grant_id=None,
                created_at=now,
                updated_at=now,
            )
        elif prior is not None:
            return {"action": "payment_failed", "payment_id": a.payment_id, "duplicate": True}
        self.events.emit(s, PaymentFailedEvent(cid, provider, a.payment_id, a.reason, a.amount, a.currency))
        return {
            "action": "payment_failed",
            "payment_id": a.payment_id,
            "customer_id": cid,
            "reason": a.reason,
        }

    def _refunded(self, s: Tx, provider: str, a: PaymentRefunded, now: datetime) -> dict[str, Any]:
        pay = repo.get_payment(s, provider, a.payment_id, lock=True)
        if pay is None or pay.status == "failed":
            raise NotYet(f"refund {a.refund_id} of payment {a.payment_id}, which has not been applied (yet)")
        if a.amount <= 0:
            raise CannotApply(f"refund {a.refund_id} has no positive amount", code="invalid_refund")
        total = a.total or pay.amount or 0
        credits = credits_to_take_back(int(pay.credits), int(total), int(pay.refunded_amount), a.amount)
        ref_row = new_id("prf")
        if not repo.insert_refund(
            s,
            id=ref_row,
            provider=provider,
            refund_id=a.refund_id,
            payment=pay.id,
            amount=a.amount,
            credits=credits,
            taken=0,
            shortfall=0,
            created_at=now,
        ):
            return {"action": "refund", "refund_id": a.refund_id, "duplicate": True}
        taken = shortfall = 0
        if credits > 0:
            res = self.ledger.clawback_fn(
                pay.customer_id,
                credits,
                idempotency_key=f"refund:{provider}:{a.refund_id}",
                first_grant=pay.grant_id,
                reason=f"{provider} refund {a.refund_id} of payment {a.payment_id}"[:500],
            )(s)
            taken, shortfall = int(res["taken"]), int(res["shortfall"])
        repo.set_refund_outcome(s, ref_row, taken=taken, shortfall=shortfall)
        refunded = int(pay.refunded_amount) + a.amount
        repo.set_payment(
            s,
            pay.id,
            refunded_amount=refunded,
            credits_taken_back=int(pay.credits_taken_back) + taken,
            shortfall=int(pay.shortfall) + shortfall,
            status="refunded" if total and refunded >= total else "partially_refunded",
            updated_at=now,
        )
        self.events.emit(
            s,
            PaymentRefundedEvent(
                pay.customer_id,
                provider,
                a.payment_id,
                a.refund_id,
                a.amount,
                a.currency,
                credits,
                taken,
                shortfall,
            ),
        )
        return {
            "action": "refund",
            "refund_id": a.refund_id,
            "payment_id": a.payment_id,
            "customer_id": pay.customer_id,
            "credits": credits,
            "taken": taken,
            "shortfall": shortfall,
        }
