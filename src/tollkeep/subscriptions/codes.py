"""Codes a buyer enters: discounts (percent, or a fixed amount in one currency), free plans and
free licences. Redeeming takes one of ``max_redemptions`` atomically (one conditional UPDATE)
and once per customer (a unique row per code and customer).

Where a code applies: at subscription creation (``code``), on a plan change (``code`` of
``/v1/upgrade``), and on renewals when its ``duration`` is ``forever`` (the subscription keeps
it). ``once``: only the period it is redeemed for (the first period at creation, the rest of
the current period on a change).
"""

from __future__ import annotations

from datetime import datetime
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
from tollkeep.subscriptions import repository as repo
from tollkeep.subscriptions.domain import Discount
from tollkeep.subscriptions.events import CodeRedeemed
from tollkeep.subscriptions.models import Code, CodeRedemption

if TYPE_CHECKING:
    from tollkeep.subscriptions.service import SubscriptionService

__all__ = ["KINDS", "Codes"]

CODE = table_of(Code)
RED = table_of(CodeRedemption)
KINDS = ("discount", "free_plan", "free_license")
DURATIONS = ("once", "forever")


def normalize(code: str) -> str:
    return code.strip().upper()


class Codes:
    def __init__(self, subs: SubscriptionService) -> None:
        self.subs = subs

    # ------------------------------------------------------------------ admin
    @staticmethod
    def view(row: Any) -> dict[str, Any]:
        return {
            "code": row.code,
            "kind": row.kind,
            "percent": row.percent,
            "amount": row.amount,
            "currency": row.currency,
            "plans": list(row.plans or []),
            "duration": row.duration,
            "max_redemptions": row.max_redemptions,
            "redemptions": row.redemptions,
            "expires_at": iso(row.expires_at),
            "disabled": row.disabled_at is not None,
            "disabled_at": iso(row.disabled_at),
            "created_at": iso(row.created_at),
        }

    def create(
        self,
        code: str,
        kind: str,
        *,
        percent: int | None = None,
        amount: int | None = None,
        currency: str | None = None,
        plans: list[str] | None = None,
        duration: str = "once",
        max_redemptions: int | None = None,
        expires_at: datetime | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        key = normalize(code)
        if not key or len(key) > 64:
            raise InvalidInput("a code is 1 to 64 characters", code="invalid_code")
        if kind not in KINDS:
            raise InvalidInput(f"kind is one of {', '.join(KINDS)}", code="invalid_code_kind")
        if duration not in DURATIONS:
            raise InvalidInput("duration is 'once' or 'forever'", code="invalid_duration")
        cat = self.subs.catalog()
        plans = list(dict.fromkeys(plans or []))
        for p in plans:
            if cat.plan(p) is None:
                raise InvalidInput(f"unknown plan {p!r}", code="unknown_plan")
        if kind == "discount":
            if (percent is None) == (amount is None):
                raise InvalidInput("a discount is a percent or an amount + currency", code="invalid_discount")
            if percent is not None and not 1 <= percent <= 100:
                raise InvalidInput("percent is 1..100", code="invalid_discount")
            if amount is not None and (amount <= 0 or not currency):
                raise InvalidInput(
                    "a fixed discount is a positive amount with a currency", code="invalid_discount"
                )
        else:
            percent, amount, currency = (100, None, None) if kind == "free_plan" else (None, None, None)
            if len(plans) != 1 and kind == "free_license":
                raise InvalidInput("a free-licence code names exactly one plan", code="invalid_discount")
            if not plans and kind == "free_plan":
                raise InvalidInput("a free-plan code names its plans", code="invalid_discount")
        if max_redemptions is not None and max_redemptions < 1:
            raise InvalidInput("max_redemptions is at least 1 (or null)", code="invalid_max_redemptions")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.subs.clock.now()
            if s.execute(select(CODE.c.code).where(CODE.c.code == key)).first() is not None:
                raise Conflict(f"code {key} exists", code="code_exists")
            repo.insert_code(
                s,
                code=key,
                kind=kind,
                percent=percent,
                amount=amount,
                currency=currency.upper() if currency else None,
                plans=plans,
                duration=duration,
                max_redemptions=max_redemptions,
                redemptions=0,
                expires_at=expires_at,
                created_at=now,
                updated_at=now,
            )
            out = self.view(self._get(s, key))
            if actor is not None:
                record(s, actor, "code.create", ("code", key), after=out, at=now)
            return out

        return self.subs.executor.call(Command(fn, None))

    def _get(self, s: Tx, code: str) -> Any:
        row = s.execute(select(CODE).where(CODE.c.code == normalize(code))).first()
        if row is None:
            raise NotFound("no such code", code="code_not_found")
        return row

    def get(self, code: str) -> dict[str, Any]:
        with self.subs.db.scope(write=False) as s:
            return self.view(self._get(s, code))

    def list(self, *, include_disabled: bool = True, limit: int = 100) -> list[dict[str, Any]]:
        q = select(CODE).order_by(CODE.c.created_at.desc(), CODE.c.code).limit(max(1, min(limit, 500)))
        if not include_disabled:
            q = q.where(CODE.c.disabled_at.is_(None))
        with self.subs.db.scope(write=False) as s:
            return [self.view(r) for r in s.execute(q).all()]

    def disable(self, code: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """No more redemptions; a ``forever`` code already redeemed keeps applying."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.subs.clock.now()
            row = self._get(s, code)
            if row.disabled_at is None:
                repo.update_code(s, row.code, disabled_at=now, updated_at=now)
            out = self.view(self._get(s, code))
            if actor is not None:
                record(s, actor, "code.disable", ("code", row.code), after=out, at=now)
            return out

        return self.subs.executor.call(Command(fn, None))

    # ------------------------------------------------------------------ applying
    @staticmethod
    def _discount(row: Any) -> Discount:
        return Discount(percent=row.percent, amount=row.amount, currency=row.currency)

    def check(self, s: Tx, code: str, plan: str, currency: str | None, now: datetime) -> Any:
        """The code's row if it can be redeemed for ``plan`` now, else a 4xx with a stable
        code (the counter and the per-customer rule are checked when it is taken)."""
        row = self._get(s, code)
        if row.disabled_at is not None:
            raise Conflict("this code is disabled", code="code_disabled")
        if row.expires_at is not None and row.expires_at <= now:
            raise Conflict("this code has expired", code="code_expired")
        if row.max_redemptions is not None and row.redemptions >= row.max_redemptions:
            raise Conflict("this code has no redemptions left", code="code_exhausted")
        if row.plans and plan not in row.plans:
            raise InvalidInput("this code does not apply to this plan", code="code_not_applicable")
        if (
            row.kind == "discount"
            and row.amount is not None
            and currency
            and row.currency != currency.upper()
        ):
            raise InvalidInput(f"this code is in {row.currency}", code="code_not_applicable")
        if row.kind == "free_license":
            raise InvalidInput("a free-licence code is redeemed on its own", code="code_not_applicable")
        return row

    def discount_for(
        self, s: Tx, sub: Any, plan: str, code: str | None, now: datetime
    ) -> tuple[Discount | None, str | None]:
        """The discount of a plan change: the ``code`` given (checked), else the subscription's
        ``forever`` code when it applies to ``plan``."""
        if code:
            row = self.check(s, code, plan, sub.currency, now)
            mine = s.execute(
                select(RED.c.id).where(RED.c.code == row.code, RED.c.customer_id == sub.customer_id)
            ).first()
            if mine is not None:  # the quote says so too, not only the change
                raise Conflict("already redeemed", code="code_already_redeemed")
            return self._discount(row), row.code
        return self.renewal_discount(s, sub, plan), None

    def renewal_discount(self, s: Tx, sub: Any, plan: str) -> Discount | None:
        if not sub.discount_code:
            return None
        row = s.execute(select(CODE).where(CODE.c.code == sub.discount_code)).first()
        if row is None or (row.plans and plan not in row.plans):
            return None
        return self._discount(row)

    def redeem(
        self,
        s: Tx,
        code: str,
        customer_id: str,
        now: datetime,
        *,
        subscription_id: str | None = None,
        license_id: str | None = None,
    ) -> Any:
        """Take one redemption (inside the caller's unit of work): 409 ``code_exhausted`` /
        ``code_already_redeemed``. A ``forever`` code sticks to the subscription."""
        key = normalize(code)
        why = repo.redeem_code(
            s, key, new_id("red"), customer_id, now, subscription_id=subscription_id, license_id=license_id
        )
        if why is not None:
            msg = {"code_exhausted": "this code has no redemptions left"}.get(why, "already redeemed")
            raise Conflict(msg, code=why)
        row = self._get(s, key)
        if subscription_id is not None and row.duration == "forever" and row.kind != "free_license":
            repo.update_subscription(s, subscription_id, discount_code=key, updated_at=now)
        self.subs.events.emit(s, CodeRedeemed(key, customer_id, row.kind, subscription_id, license_id))
        return row

    def redeem_free_license(self, customer_id: str, code: str) -> dict[str, Any]:
        """A free-licence code: a licence of its plan for the customer (once per customer).
        One unit of work: the redemption is taken and the licence issued (and signed) in the
        same transaction, so a failure to issue (a plan gone from the catalog, the signing key
        locked) leaves the code unspent; the redemption row names the licence."""
        licenses = self.subs.changes.licenses
        if licenses is None:
            raise Conflict("licensing is not configured", code="licensing_unavailable")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.subs.clock.now()
            row = self._get(s, code)
            if row.kind != "free_license":
                raise InvalidInput("this code is not a free-licence code", code="code_not_applicable")
            if row.disabled_at is not None:
                raise Conflict("this code is disabled", code="code_disabled")
            if row.expires_at is not None and row.expires_at <= now:
                raise Conflict("this code has expired", code="code_expired")
            lid = new_id("lic_")
            self.redeem(s, row.code, customer_id, now, license_id=lid)
            return licenses.issue_in(
                s, customer_id=customer_id, plan=row.plans[0], note=f"code {row.code}", license_id=lid
            )

        return self.subs.executor.call(Command(fn, customer_id))
