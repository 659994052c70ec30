"""Plan changes of a subscription: quotes, prorated upgrades (an invoice for the difference,
applied when it is paid), zero-charge changes (applied at once), downgrades scheduled for the
next renewal (cancellable), an admin's forced change.

The money rule is :func:`tollkeep.subscriptions.domain.prorate`: ``(new - paid) * time left /
period``, where ``paid`` is what was actually paid for a full period of the plan held now
(``subscriptions.period_price``), exact in Decimal, converted to the invoice currency and
rounded ONCE (half up) on the final amount. The quote is always recomputed here from the
catalog, the subscription and the clock: a client's numbers are never read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select

from tollkeep.audit import record
from tollkeep.catalog import Plan
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, InvalidInput, NotFound, TollkeepError
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.subscriptions import domain
from tollkeep.subscriptions import repository as repo
from tollkeep.subscriptions.domain import ChangeKind, Status
from tollkeep.subscriptions.events import SubscriptionPlanChanged
from tollkeep.subscriptions.following import FOLLOWED
from tollkeep.subscriptions.invoicing import InvoiceRequest
from tollkeep.subscriptions.models import Invoice, PlanChange, Subscription
from tollkeep.subscriptions.rates import Rate

if TYPE_CHECKING:
    from tollkeep.licensing import LicenseService
    from tollkeep.subscriptions.codes import Codes
    from tollkeep.subscriptions.service import SubscriptionService

__all__ = ["PlanChanges", "Quote"]

SUB = table_of(Subscription)
INV = table_of(Invoice)
PC = table_of(PlanChange)
CHANGEABLE = (Status.TRIALING, Status.ACTIVE)


@dataclass(frozen=True)
class Quote:
    sub_id: str
    customer_id: str
    from_plan: str
    to_plan: str
    kind: ChangeKind
    cycle: int
    listed_currency: str
    paid_per_period: int
    list_price: int  # the new plan's listed price per period
    new_per_period: int  # after the discount that applies to this change
    fraction: Decimal
    exact: Decimal  # listed minor units, not rounded
    currency: str  # the invoice currency
    amount: int  # owed now: invoice currency, rounded once
    rate: Rate | None
    code: str | None
    period_end: datetime
    renewal_listed: int  # what the next renewal charges (listed currency)

    def view(self) -> dict[str, Any]:
        effective = {
            ChangeKind.UPGRADE: "on_payment",
            ChangeKind.ZERO: "now",
            ChangeKind.DOWNGRADE: "at_renewal",
        }
        out: dict[str, Any] = {
            "subscription_id": self.sub_id,
            "customer_id": self.customer_id,
            "from_plan": self.from_plan,
            "plan": self.to_plan,
            "kind": self.kind.value,
            "currency": self.currency,
            "amount_due": self.amount,
            "entitlements_change": effective[self.kind],
            "entitlements_change_at": iso(self.period_end) if self.kind is ChangeKind.DOWNGRADE else None,
            "proration": {
                "listed_currency": self.listed_currency,
                "paid_per_period": self.paid_per_period,
                "new_list_price": self.list_price,
                "new_per_period": self.new_per_period,
                "remaining_fraction": format(self.fraction, "f"),
                "exact": format(self.exact, "f"),
                "formula": "(new_per_period - paid_per_period) * remaining / period",
                "rounding": "half_up, once, on the final amount",
            },
            "code": self.code,
            "next_renewal": {
                "at": iso(self.period_end),
                "plan": self.to_plan,
                "listed_currency": self.listed_currency,
                "listed_amount": self.renewal_listed,
            },
        }
        if self.rate is not None and self.currency != self.listed_currency:
            out["rate_audit"] = {
                "listed_currency": self.listed_currency,
                "rate": format(self.rate.value, "f"),
                "rate_source": self.rate.source,
                "rated_at": iso(self.rate.at),
                "rounding": "half_up",
            }
        return out


class PlanChanges:
    def __init__(self, subs: SubscriptionService) -> None:
        self.subs = subs
        self.licenses: LicenseService | None = None  # the runtime plugs the licensing domain in
        self.codes: Codes | None = None

    # ------------------------------------------------------------------ quoting
    def _plan(self, key: str) -> Plan:
        plan = self.subs.catalog().plan(key)
        if plan is None:  # the same answer for any plan the caller cannot have
            raise NotFound(f"no plan {key!r}", code="plan_not_found")
        return plan

    def _live(self, s: Tx, customer_id: str, sub_id: str | None, *, lock: bool) -> Any:
        q = select(SUB).where(SUB.c.customer_id == customer_id, SUB.c.status != Status.CANCELED)
        if sub_id is not None:
            q = q.where(SUB.c.id == sub_id)
        q = q.order_by(SUB.c.created_at.desc()).limit(1)
        row = s.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound("no live subscription of this customer", code="subscription_not_found")
        return row

    def _listed(self, plan: Plan, currency: str) -> int:
        return int(plan.prices.get(currency.lower(), 0))

    def paid_per_period(self, row: Any) -> int:
        if row.period_price is not None:
            return int(row.period_price)
        plan = self.subs.catalog().plan(row.plan)
        return self._listed(plan, row.currency) if plan is not None else 0

    def _rate(self, listed: str, target: str) -> Rate | None:
        if listed.upper() == target.upper():
            return None
        return self.subs.rates.rate(listed, target, self.subs.clock.now())

    def compute(
        self, s: Tx, row: Any, plan_key: str, *, code: str | None, rate: Rate | None, now: datetime
    ) -> Quote:
        """The quote, from the catalog, the subscription's row and ``now`` only."""
        cat = self.subs.catalog()
        new = self._plan(plan_key)
        old = cat.plan(row.plan)
        if row.status not in CHANGEABLE:
            raise Conflict(f"subscription {row.id} is {row.status}", code="subscription_not_active")
        if row.provider in FOLLOWED:  # its provider bills it: the change is made there, then followed
            raise Conflict(
                f"this subscription is billed by {row.provider}: change its plan there (the customer "
                "portal); the change follows here from its webhooks",
                code="provider_managed",
                details={"provider": row.provider},
            )
        if new.key == row.plan:
            raise Conflict(f"the subscription is on {new.key} already", code="same_plan")
        if old is not None and old.period != new.period:
            raise InvalidInput(
                f"{new.key} is billed per {new.period}, the subscription per {old.period}",
                code="period_mismatch",
            )
        list_price = self._listed(new, row.currency)
        if list_price <= 0:
            raise InvalidInput(f"plan {new.key!r} has no {row.currency} price", code="plan_not_billable")
        discount, code_used = None, None
        if self.codes is not None:
            discount, code_used = self.codes.discount_for(s, row, new.key, code, now)
        new_per_period = domain.discounted(list_price, row.currency, discount)
        forever = self.codes.renewal_discount(s, row, new.key) if self.codes is not None else None
        renewal_listed = domain.discounted(list_price, row.currency, forever)
        if row.status == Status.TRIALING:  # nothing was paid, nothing is owed: changes at once
            paid, exact, fraction, kind, amount = 0, Decimal(0), Decimal(0), ChangeKind.ZERO, 0
        else:
            paid = self.paid_per_period(row)
            fraction = domain.remaining_fraction(row.current_period_start, row.current_period_end, now)
            exact = domain.prorate(
                paid, new_per_period, row.current_period_start, row.current_period_end, now
            )
            value = rate.value if rate is not None else Decimal(1)
            amount = domain.convert(exact, row.currency, value, row.invoice_currency) if exact > 0 else 0
            kind = domain.change_kind(amount, paid, new_per_period)
        return Quote(
            row.id,
            row.customer_id,
            row.plan,
            new.key,
            kind,
            row.cycle,
            row.currency,
            paid,
            list_price,
            new_per_period,
            fraction,
            exact,
            row.invoice_currency,
            amount if kind is ChangeKind.UPGRADE else 0,
            rate,
            code_used,
            row.current_period_end,
            renewal_listed,
        )

    def quote(
        self, customer_id: str, plan_key: str, *, subscription_id: str | None = None, code: str | None = None
    ) -> dict[str, Any]:
        """Read-only: what changing to ``plan_key`` owes now, when it takes effect, what the next
        renewal charges."""
        self._plan(plan_key)
        with self.subs.db.scope(write=False) as s:
            row = self._live(s, customer_id, subscription_id, lock=False)
        rate = self._rate(row.currency, row.invoice_currency)
        with self.subs.db.scope(write=False) as s:
            row = self._live(s, customer_id, subscription_id, lock=False)
            return self.compute(s, row, plan_key, code=code, rate=rate, now=self.subs.clock.now()).view()

    # ------------------------------------------------------------------ changing
    def change_view(self, s: Tx, ch: Any) -> dict[str, Any]:
        inv = repo.get_invoice(s, ch.invoice_id) if ch.invoice_id else None
        return {
            "id": ch.id,
            "subscription_id": ch.subscription_id,
            "customer_id": ch.customer_id,
            "kind": ch.kind,
            "status": ch.status,
            "from_plan": ch.from_plan,
            "plan": ch.to_plan,
            "cycle": ch.cycle,
            "currency": ch.currency,
            "amount_due": ch.amount,
            "paid_per_period": ch.paid_per_period,
            "new_per_period": ch.new_per_period,
            "exact": ch.exact_owed,
            "code": ch.code,
            "quoted_at": iso(ch.quoted_at),
            "effective_at": iso(ch.effective_at),
            "applied_at": iso(ch.applied_at),
            "invoice": None if inv is None else self.subs.invoice_view(inv),
        }

    def upgrade(
        self,
        customer_id: str,
        plan_key: str,
        *,
        subscription_id: str | None = None,
        idempotency_key: str | None = None,
        code: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Change the plan of the customer's subscription: an upgrade opens an invoice for the
        prorated difference (applied when settled), a zero-charge change applies now, a
        downgrade is scheduled for the next renewal. The same ``idempotency_key`` answers the
        same change."""
        self._plan(plan_key)
        with self.subs.db.scope(write=False) as s:
            first = self._live(s, customer_id, subscription_id, lock=False)
        rate = self._rate(first.currency, first.invoice_currency)

        def fn(s: Tx) -> tuple[dict[str, Any], bool]:
            now = self.subs.clock.now()
            row = self._live(s, customer_id, subscription_id, lock=True)
            if idempotency_key is not None:
                ch = s.execute(
                    select(PC).where(PC.c.subscription_id == row.id, PC.c.idempotency_key == idempotency_key)
                ).first()
                if ch is not None:
                    if ch.to_plan != plan_key:
                        raise Conflict(
                            "this Idempotency-Key was used for another change", code="idempotency_conflict"
                        )
                    return {**self.change_view(s, ch), "replayed": True}, False
            pending = s.execute(
                select(PC).where(PC.c.subscription_id == row.id, PC.c.status == "pending")
            ).first()
            if pending is not None:
                raise Conflict(
                    "an upgrade of this subscription waits for its invoice to be paid",
                    code="upgrade_pending",
                    details={"change_id": pending.id, "invoice_id": pending.invoice_id},
                )
            q = self.compute(s, row, plan_key, code=code, rate=rate, now=now)
            cid = new_id("pc")
            if q.code is not None and self.codes is not None:
                self.codes.redeem(s, q.code, customer_id, now, subscription_id=row.id)
            status = {
                ChangeKind.UPGRADE: "pending",
                ChangeKind.ZERO: "applied",
                ChangeKind.DOWNGRADE: "scheduled",
            }
            invoice_id = self._open_invoice(s, row, q, now) if q.kind is ChangeKind.UPGRADE else None
            if q.kind is ChangeKind.DOWNGRADE:
                self._cancel_scheduled(s, row.id, now)
            repo.insert_change(
                s,
                id=cid,
                subscription_id=row.id,
                customer_id=customer_id,
                kind=q.kind.value,
                status=status[q.kind],
                from_plan=row.plan,
                to_plan=q.to_plan,
                cycle=row.cycle,
                idempotency_key=idempotency_key,
                invoice_id=invoice_id,
                paid_per_period=q.paid_per_period,
                new_per_period=q.new_per_period,
                exact_owed=format(q.exact, "f")[:100],
                currency=q.currency,
                amount=q.amount,
                code=q.code,
                quoted_at=now,
                effective_at=q.period_end if q.kind is ChangeKind.DOWNGRADE else None,
                created_at=now,
                updated_at=now,
            )
            licences = False
            if q.kind is ChangeKind.ZERO:
                licences = self.apply_locked(s, row, repo.get_change(s, cid), now, reason="upgrade")
            ch = repo.get_change(s, cid)
            out = {**self.change_view(s, ch), "replayed": False}
            if actor is not None:
                record(s, actor, "subscription.change_plan", ("subscription", row.id), after=out, at=now)
            return out, licences

        out, licences = self.subs.executor.call(Command(fn, customer_id))
        self.after_apply(out["customer_id"], out["from_plan"], out["plan"], licences)
        return self._publish(out)

    def _open_invoice(self, s: Tx, row: Any, q: Quote, now: datetime) -> str:
        """The invoice of an upgrade (kind ``upgrade``, the n-th of this cycle), as a draft: the
        provider's invoice is created after the commit, outside any transaction
        (:meth:`_publish`), then it opens."""
        seq = (
            s.execute(
                select(func.count())
                .select_from(INV)
                .where(INV.c.subscription_id == row.id, INV.c.cycle == row.cycle, INV.c.kind == "upgrade")
            ).scalar_one()
            + 1
        )
        iid = new_id("inv")
        exact_listed = int(domain.convert(q.exact, q.listed_currency, Decimal(1), q.listed_currency))
        discount = q.list_price - q.new_per_period
        repo.insert_invoice(
            s,
            id=iid,
            subscription_id=row.id,
            customer_id=row.customer_id,
            cycle=row.cycle,
            kind="upgrade",
            seq=seq,
            plan=q.to_plan,
            status="draft",
            provider=row.provider,
            listed_currency=q.listed_currency,
            listed_amount=exact_listed,
            currency=q.currency,
            amount=q.amount,
            rate=q.rate.value if q.rate is not None else Decimal(1),
            rate_source=(q.rate.source if q.rate is not None else "identity")[:64],
            rated_at=q.rate.at if q.rate is not None else now,
            discount_code=q.code,
            discount_amount=int(
                domain.convert(
                    Decimal(discount) * q.fraction, q.listed_currency, Decimal(1), q.listed_currency
                )
            )
            if discount > 0
            else 0,
            period_start=now,
            period_end=row.current_period_end,
            attempts=0,
            created_at=now,
            updated_at=now,
        )
        return iid

    def _publish(self, out: dict[str, Any]) -> dict[str, Any]:
        """Outside any transaction: the provider's invoice (the invoice id is its idempotency
        key, so a retry after a crash makes no second one), then the local invoice opens. A
        provider's refusal voids the change and its invoice: 502 ``invoice_provider_failed``."""
        inv = out.get("invoice")
        if inv is None or inv["status"] != "draft":
            return out
        provider = self.subs.providers.get(inv["provider"])
        try:
            if provider is None:
                raise RuntimeError(f"no invoice provider {inv['provider']!r} is configured")
            req = InvoiceRequest(
                inv["id"],
                inv["subscription_id"],
                inv["customer_id"],
                inv["cycle"],
                inv["currency"],
                inv["amount"],
                f"upgrade to {inv['plan']}",
            )
            created = provider.create_invoice(req)
        except Exception as exc:
            error = (f"{type(exc).__name__}: {exc}")[:500]

            def void(s: Tx) -> None:
                now = self.subs.clock.now()
                repo.update_invoice(
                    s, inv["id"], status="void", voided_at=now, last_error=error, updated_at=now
                )
                repo.update_change(s, out["id"], status="void", updated_at=now)

            self.subs.executor.call(Command(void, inv["customer_id"]))
            raise TollkeepError(
                "the payment provider could not create the invoice; try again",
                code="invoice_provider_failed",
                status=502,
            ) from None

        def opened(s: Tx) -> dict[str, Any]:
            now = self.subs.clock.now()
            row = repo.get_invoice(s, inv["id"], lock=True)
            if row is not None and row.status == "draft":
                repo.update_invoice(
                    s,
                    row.id,
                    status="open",
                    provider_invoice_ref=created.ref,
                    pay_url=created.pay_url,
                    opened_at=now,
                    attempts=row.attempts + 1,
                    updated_at=now,
                )
            return self.change_view(s, repo.get_change(s, out["id"]))

        return {**self.subs.executor.call(Command(opened, inv["customer_id"])), "replayed": out["replayed"]}

    def _cancel_scheduled(self, s: Tx, sub_id: str, now: datetime) -> int:
        n = 0
        for ch in s.execute(
            select(PC).where(PC.c.subscription_id == sub_id, PC.c.status == "scheduled")
        ).all():
            repo.update_change(s, ch.id, status="canceled", updated_at=now)
            n += 1
        return n

    def void_pending(self, s: Tx, sub_id: str, now: datetime, *, scheduled_too: bool = False) -> None:
        """The period ended (or the subscription was canceled): an unpaid upgrade is void, its
        invoice too (a late payment of it is refused: ``invoice_void``)."""
        statuses = ("pending", "scheduled") if scheduled_too else ("pending",)
        for ch in s.execute(
            select(PC).where(PC.c.subscription_id == sub_id, PC.c.status.in_(statuses))
        ).all():
            repo.update_change(s, ch.id, status="void", updated_at=now)
            if ch.invoice_id:
                inv = repo.get_invoice(s, ch.invoice_id)
                if inv is not None and inv.status in ("draft", "open"):
                    repo.update_invoice(s, inv.id, status="void", voided_at=now, updated_at=now)

    def scheduled(self, s: Tx, sub_id: str) -> Any:
        return s.execute(
            select(PC)
            .where(PC.c.subscription_id == sub_id, PC.c.status == "scheduled")
            .order_by(PC.c.created_at.desc())
        ).first()

    # ------------------------------------------------------------------ applying
    def apply_locked(self, s: Tx, row: Any, ch: Any, now: datetime, *, reason: str) -> bool:
        """Move the (locked) subscription and its customer to ``ch.to_plan`` now, inside the
        current cycle. Returns True: the licences move after the commit (:meth:`after_apply`)."""
        cat = self.subs.catalog()
        old, new = cat.plan(row.plan), cat.plan(ch.to_plan)
        self.subs._update(s, row, now, plan=ch.to_plan, period_price=ch.new_per_period)
        if row.status in CHANGEABLE and _follows(old) and _follows(new):
            assert old is not None and new is not None and old.allowance and new.allowance
            extra = max(0, new.allowance.amount - old.allowance.amount)
            self.subs.plans.upgrade_in_cycle_fn(
                row.customer_id,
                ch.to_plan,
                key=f"{row.id}:{row.cycle}:change:{ch.id}",
                extra=extra,
                until=row.current_period_end,
            )(s)
        else:
            self.subs.plans.change_plan_fn(row.customer_id, ch.to_plan)(s)
        repo.update_change(s, ch.id, status="applied", applied_at=now, updated_at=now)
        self.subs.events.emit(
            s, SubscriptionPlanChanged(row.id, row.customer_id, ch.to_plan, row.plan, reason)
        )
        return True

    def after_apply(self, customer_id: str, from_plan: str, to_plan: str, applied: bool = True) -> None:
        """After the commit: the customer's licences on the old plan get the new plan's terms,
        same licence id (the app sees them at its next online validation)."""
        if not applied or self.licenses is None:
            return
        for lic in self.licenses.list(customer_id=customer_id, status="active", limit=500):
            if lic["plan"] == from_plan:
                self.licenses.update(lic["id"], plan=to_plan)

    def settle_upgrade(self, s: Tx, inv: Any, now: datetime) -> dict[str, Any]:
        """An upgrade invoice was paid (under its lock, open): apply the change once. A change
        whose cycle is over, or whose plan moved meanwhile, is not applied (``stale``: the
        operator refunds)."""
        ch = s.execute(select(PC).where(PC.c.invoice_id == inv.id)).first()
        row = self.subs._row(s, inv.subscription_id, lock=True)
        repo.update_invoice(s, inv.id, status="paid", paid_at=now, updated_at=now)
        applied = False
        if ch is not None and ch.status == "pending":
            if row.status in CHANGEABLE and row.cycle == ch.cycle and row.plan == ch.from_plan:
                applied = self.apply_locked(s, row, ch, now, reason="upgrade")
            else:
                repo.update_change(s, ch.id, status="stale", updated_at=now)
        return {
            "applied": applied,
            "change": None if ch is None else {"id": ch.id, "from_plan": ch.from_plan, "plan": ch.to_plan},
        }

    def settle_renewal_change(self, s: Tx, row: Any, inv: Any, now: datetime) -> None:
        """The renewal invoice of a cycle that starts on a scheduled (cheaper) plan was paid: the
        subscription is already on the new cycle; move the customer's plan."""
        self.subs.plans.change_plan_fn(row.customer_id, inv.plan)(s)
        self.mark_applied(s, row.id, inv.plan, now)
        self.subs.events.emit(
            s, SubscriptionPlanChanged(row.id, row.customer_id, inv.plan, row.plan, "downgrade")
        )

    def mark_applied(self, s: Tx, sub_id: str, plan: str, now: datetime) -> None:
        for ch in s.execute(
            select(PC).where(PC.c.subscription_id == sub_id, PC.c.status == "scheduled", PC.c.to_plan == plan)
        ).all():
            repo.update_change(s, ch.id, status="applied", applied_at=now, updated_at=now)

    # ------------------------------------------------------------------ admin
    def admin_change(
        self, sub_id: str, plan_key: str, *, when: str, actor: Actor | None = None
    ) -> dict[str, Any]:
        """An operator moves a subscription: ``now`` (applied at once, nothing charged; the next
        renewal charges the new plan) or ``renewal`` (scheduled like a downgrade)."""
        if when not in ("now", "renewal"):
            raise InvalidInput("when is 'now' or 'renewal'", code="invalid_when")
        new = self._plan(plan_key)

        def fn(s: Tx) -> tuple[dict[str, Any], bool]:
            now = self.subs.clock.now()
            row = self.subs._row(s, sub_id, lock=True)
            if row.status not in CHANGEABLE:
                raise Conflict(f"subscription {sub_id} is {row.status}", code="subscription_not_active")
            if new.key == row.plan:
                raise Conflict(f"the subscription is on {new.key} already", code="same_plan")
            old = self.subs.catalog().plan(row.plan)
            if old is not None and old.period != new.period:
                raise InvalidInput("plans of different billing periods", code="period_mismatch")
            price = self._listed(new, row.currency)
            if price <= 0:
                raise InvalidInput(f"plan {new.key!r} has no {row.currency} price", code="plan_not_billable")
            for p in s.execute(
                select(PC).where(PC.c.subscription_id == row.id, PC.c.status == "pending")
            ).all():
                repo.update_change(s, p.id, status="void", updated_at=now)
                if p.invoice_id:
                    repo.update_invoice(s, p.invoice_id, status="void", voided_at=now, updated_at=now)
            self._cancel_scheduled(s, row.id, now)
            cid = new_id("pc")
            repo.insert_change(
                s,
                id=cid,
                subscription_id=row.id,
                customer_id=row.customer_id,
                kind="admin",
                status="scheduled" if when == "renewal" else "pending",
                from_plan=row.plan,
                to_plan=new.key,
                cycle=row.cycle,
                paid_per_period=self.paid_per_period(row),
                new_per_period=price,
                exact_owed="0",
                currency=row.invoice_currency,
                amount=0,
                quoted_at=now,
                effective_at=row.current_period_end if when == "renewal" else now,
                created_at=now,
                updated_at=now,
            )
            licences = False
            if when == "now":
                licences = self.apply_locked(s, row, repo.get_change(s, cid), now, reason="admin")
            out = self.change_view(s, repo.get_change(s, cid))
            if actor is not None:
                record(s, actor, "subscription.change_plan", ("subscription", row.id), after=out, at=now)
            return out, licences

        out, licences = self.subs.executor.call(Command(fn, self.subs._owner(SUB, sub_id)))
        self.after_apply(out["customer_id"], out["from_plan"], out["plan"], licences)
        return out

    def cancel_scheduled(self, sub_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Cancel a scheduled change, while the renewal that would apply it is not invoiced yet."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.subs.clock.now()
            row = self.subs._row(s, sub_id, lock=True)
            ch = self.scheduled(s, row.id)
            if ch is None:
                raise Conflict("no scheduled plan change", code="no_scheduled_change")
            inv = repo.invoice_of_cycle(s, row.id, row.cycle + 1)
            if inv is not None and inv.status != "void":
                raise Conflict(
                    "the renewal that applies it is invoiced already", code="change_already_invoiced"
                )
            repo.update_change(s, ch.id, status="canceled", updated_at=now)
            out = self.change_view(s, repo.get_change(s, ch.id))
            if actor is not None:
                record(
                    s,
                    actor,
                    "subscription.cancel_scheduled_change",
                    ("subscription", row.id),
                    after=out,
                    at=now,
                )
            return out

        return self.subs.executor.call(Command(fn, self.subs._owner(SUB, sub_id)))

    def list_changes(self, sub_id: str) -> list[dict[str, Any]]:
        with self.subs.db.scope(write=False) as s:
            self.subs._row(s, sub_id)
            rows = s.execute(
                select(PC).where(PC.c.subscription_id == sub_id).order_by(PC.c.created_at, PC.c.id)
            ).all()
            return [self.change_view(s, r) for r in rows]


def _follows(plan: Plan | None) -> bool:
    """The plan's allowance follows its subscription's cycles (see plans.domain)."""
    return plan is not None and plan.allowance is not None and plan.allowance.period == plan.period
