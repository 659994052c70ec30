"""Ledger use cases. Each public method builds a unit of work ``fn(session)`` and runs it
through the :class:`WriteExecutor` (group commit on SQLite, row locks on PostgreSQL).

Inside a unit of work: lock the wallet, check idempotency, load the wallet's state, apply the
pure rules of :mod:`tollkeep.ledger.domain`, write back state and journal together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from tollkeep.catalog import Catalog
from tollkeep.kit.clock import Clock, SystemClock, iso, period_bounds
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import CapExceeded, Conflict, Forbidden, InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.jsonsafe import check_json
from tollkeep.ledger import repository as repo
from tollkeep.ledger.domain import (
    SOURCES,
    Draw,
    WalletState,
    check_replay,
    merge_draws,
    request_hash,
    subtract_draws,
)
from tollkeep.ledger.events import CreditsGranted
from tollkeep.ledger.grants import GrantMeta, new_grant
from tollkeep.pricing import Rating, needs_aggregate, rate

__all__ = ["BeforeSpend", "LedgerService", "UsageRequest"]

# (tx, locked wallet row, wallet state, grant metadata, catalog, now): may add grants to the state
BeforeSpend = Callable[[Tx, Any, WalletState, GrantMeta, Catalog, datetime], None]

CHARGE_KINDS = ("usage", "settle")  # operations that charge: a usage event, a settled hold


@dataclass(frozen=True)
class UsageRequest:
    customer_id: str
    meter: str
    quantity: Decimal | None
    idempotency_key: str
    properties: Mapping[str, Any] | None = None
    api_key_id: str | None = None


def _dec(value: Any, name: str = "quantity") -> Decimal:
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInput(f"{name} must be a number", code="invalid_quantity") from exc
    if not d.is_finite() or d < 0:
        raise InvalidInput(f"{name} must be a finite number >= 0", code="invalid_quantity")
    return d


class LedgerService:
    def __init__(
        self,
        executor: WriteExecutor,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock | None = None,
        hold_default_ttl: int = 300,
        hold_max_ttl: int = 86_400,
        before_spend: BeforeSpend | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.executor = executor
        self.events = events or EventBus()  # CreditsGranted goes out here
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.hold_default_ttl = hold_default_ttl
        self.hold_max_ttl = hold_max_ttl
        # called in a charge's or hold's unit of work before credits are drawn (the plans
        # domain grants the period's allowance there, lazily)
        self.before_spend = before_spend

    @property
    def unit(self) -> str:
        return self.catalog().credits.name

    # ================================================================ helpers inside a unit of work
    def _wallet(self, s: Tx, customer_id: str) -> Any:
        w = repo.lock_wallet_of_customer(s, customer_id)
        if w is None:
            raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
        return w

    @staticmethod
    def _check_active(w: Any) -> None:
        if w.status != "active":
            raise Forbidden(f"customer is {w.status}", code="customer_inactive")

    def _state(self, s: Tx, w: Any, *, grant_ids: tuple[str, ...] = ()) -> WalletState:
        return repo.load_state(s, w, grant_ids=grant_ids)

    def _give_back_hold(
        self,
        st: WalletState,
        meta: dict[str, dict[str, Any]],
        held: Draw,
        amount: int,
        now: datetime,
        *,
        operation_id: str,
        hold_id: str,
    ) -> None:
        """Return ``amount`` of a hold to the grants it came from. A part the hold took on the
        overdraft that was repaid since (a grant arrived meanwhile) cannot go back to the
        overdraft: it becomes a new grant, its entries tied to the hold, so nothing is lost."""
        _, unplaced = st.give_back(
            held, amount, now, kind="release", operation_id=operation_id, hold_id=hold_id, live_only=False
        )
        if unplaced:
            new_grant(
                st,
                meta,
                amount=unplaced,
                source="refund",
                now=now,
                operation_id=operation_id,
                note=f"released from hold {hold_id}",
                hold_id=hold_id,
            )

    # ================================================================ grants
    def grant(self, customer_id: str, amount: int, **kw: Any) -> dict[str, Any]:
        """Grant credits (see :meth:`grant_fn` for the options) and wait for the commit."""
        return self.executor.call(self.grant_fn(customer_id, amount, **kw), key=customer_id)

    def grant_fn(
        self,
        customer_id: str,
        amount: int,
        *,
        source: str = "purchase",
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
        priority: int | None = None,
        meter: str | None = None,
        note: str | None = None,
    ) -> Callable[[Tx], dict[str, Any]]:
        if not isinstance(amount, int) or isinstance(amount, bool) or amount <= 0:
            raise InvalidInput("amount must be a positive integer", code="invalid_amount")
        if source not in SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(SOURCES)}", code="invalid_source")
        if meter is not None:
            self.catalog().meter(meter)  # credits scoped to a meter that does not exist: 422
        for label, ts in (("expires_at", expires_at), ("effective_at", effective_at)):
            if ts is not None and ts.tzinfo is None:
                raise InvalidInput(f"{label} needs a timezone", code="invalid_timestamp")
        key = idempotency_key or new_id("auto")
        payload = {
            "amount": amount,
            "source": source,
            "expires_at": expires_at,
            "effective_at": effective_at,
            "priority": priority,
            "meter": meter,
        }
        h = request_hash(payload)

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = self._wallet(s, customer_id)
            prior = repo.find_operation(s, w.id, "grant", key)
            if prior is not None:
                check_replay(prior.request_hash, h, key)
                return {**prior.result, "duplicate": True}
            if expires_at is not None and expires_at <= max(effective_at or now, now):
                raise InvalidInput(
                    "expires_at must be in the future and after the grant takes effect",
                    code="invalid_timestamp",
                )
            st = self._state(s, w)
            meta: dict[str, dict[str, Any]] = {}
            op_id = new_id("op")
            g = new_grant(
                st,
                meta,
                amount=amount,
                source=source,
                now=now,
                operation_id=op_id,
                priority=priority,
                effective_at=effective_at,
                expires_at=expires_at,
                meter=meter,
                note=note,
            )
            result = {
                "id": g.id,
                "operation_id": op_id,
                "customer_id": customer_id,
                "amount": amount,
                "source": source,
                "priority": g.priority,
                "meter": meter,
                "effective_at": iso(g.effective_at),
                "expires_at": iso(expires_at),
                "unit": self.unit,
            }
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=customer_id,
                kind="grant",
                idempotency_key=key,
                request_hash=h,
                amount=amount,
                meter=meter,
                properties={"note": note} if note else None,
                result=result,
                created_at=now,
            )
            repo.persist(s, st, now, grant_meta=meta)
            self.events.emit(
                s,
                CreditsGranted(customer_id, g.id, op_id, amount, source, self.unit, key, iso(expires_at)),
            )
            return {**result, "balance": st.balance(now), "duplicate": False}

        return fn

    # ================================================================ usage (debit)
    def _meter_context(
        self,
        s: Tx,
        w: Any,
        cat: Catalog,
        meter: str,
        quantity: Decimal,
        props: Mapping[str, Any],
        now: datetime,
        *,
        enforce_hard_caps: bool = True,
        quantity_given: bool = True,
    ) -> tuple[Rating, dict[str, Any]]:
        """Rate an event and work out its effect on counters and caps (nothing is written).

        ``ctx["quantity"]`` is the quantity the event records and counts: the one given, except
        on a tokens meter, where it is always ``input_tokens + output_tokens`` from the
        properties (a ``quantity`` given that says otherwise is refused: ``quantity_mismatch``).

        A hard cap counts what was used in the period plus what open holds have reserved on
        the meter, so parallel holds cannot all pass the check; on a ``max`` meter both are
        readings, and the cap compares the largest of them. Settling a hold does not enforce
        hard caps (the work is done; its capacity was reserved when the hold was made)."""
        m = cat.meter(meter)
        plan = cat.plan(w.plan) if w.plan else None
        caps = plan.caps_for(meter) if plan else ()
        needs_agg = needs_aggregate(m)
        ctx: dict[str, Any] = {
            "counters": {},
            "unique": None,
            "exclude": frozenset(),
            "caps": caps,
            "meter": m,
            "quantity": quantity,
        }
        if m.price is not None and m.price.model == "tokens":
            # the token counts are the quantity: rate first (it reads them), then check
            first = rate(cat, meter, quantity, properties=props)
            measured = first.quantity
            if quantity_given and quantity != measured:
                raise InvalidInput(
                    f"quantity {quantity} contradicts the token counts (input + output = {measured})",
                    code="quantity_mismatch",
                    details={"quantity": str(quantity), "tokens": str(measured)},
                )
            quantity = ctx["quantity"] = measured
            if not needs_agg and not caps:
                return first, ctx  # rated once: a tokens price does not read the period aggregate
        if not needs_agg and not caps:
            return rate(cat, meter, quantity, properties=props), ctx
        _, _, rating_key = period_bounds("month", now)
        periods = {rating_key} | {period_bounds(c.period, now)[2] for c in caps}
        counters = repo.get_counters(s, w.id, meter, sorted(periods))
        ctx["counters"] = counters
        ctx["rating_period"] = rating_key
        before = counters.get(rating_key, (Decimal(0), Decimal(0)))[0]
        step = quantity
        if m.aggregation == "unique_count":
            prop = m.property or "value"
            if prop not in props or props[prop] is None:
                raise InvalidInput(
                    f"meter {meter!r} counts distinct {prop!r}: put it in properties", code="missing_property"
                )
            value = str(props[prop])[:255]
            seen = repo.unique_seen(s, w.id, meter, rating_key, value)
            step = Decimal(0) if seen else Decimal(1)
            ctx["unique"] = None if seen else value
        ctx["step"] = step
        rating = rate(
            cat,
            meter,
            step if m.aggregation == "unique_count" else quantity,
            properties=props,
            period_before=before,
        )
        is_max = m.aggregation == "max"
        reserved = Decimal(0)
        if enforce_hard_caps and any(c.mode == "hard" for c in caps):
            held = repo.open_hold_quantities(s, w.id, meter)
            reserved = max(held, default=Decimal(0)) if is_max else sum(held, Decimal(0))
        for c in caps:
            _, end, key = period_bounds(c.period, now)
            used, allowance_used = counters.get(key, (Decimal(0), Decimal(0)))
            after = max(used, reserved, step) if is_max else used + reserved + step
            if enforce_hard_caps and c.mode == "hard" and after > c.limit:
                raise CapExceeded(
                    f"meter {meter!r} is capped at {c.limit} per {c.period} on plan {w.plan!r}",
                    details={
                        "meter": meter,
                        "limit": str(c.limit),
                        "used": str(used),
                        "reserved": str(reserved),
                        "resets_at": iso(end),
                    },
                )
            allowance_after = max(allowance_used, step) if is_max else allowance_used + step
            if c.mode != "hard" and allowance_after > c.limit:
                ctx["exclude"] = frozenset({"plan_allowance"})
        return rating, ctx

    def _write_counters(
        self,
        s: Tx,
        w: Any,
        meter: str,
        ctx: dict[str, Any],
        quantity: Decimal,
        used_allowance: bool,
        now: datetime,
    ) -> None:
        m = ctx["meter"]
        counters: dict[str, tuple[Decimal, Decimal]] = ctx["counters"]
        if "rating_period" not in ctx:
            return
        step = ctx.get("step", quantity)
        periods = {ctx["rating_period"]} | {period_bounds(c.period, now)[2] for c in ctx["caps"]}
        for p in sorted(periods):
            old, allowance_used = counters.get(p, (Decimal(0), Decimal(0)))
            if m.aggregation == "max":  # a max meter's counters hold the period's largest reading
                new = max(old, quantity)
                au = max(allowance_used, quantity) if used_allowance else allowance_used
            else:
                new = old + step
                au = allowance_used + (step if used_allowance else 0)
            repo.put_counter(s, w.id, meter, p, new, au, exists=p in counters)
        if ctx["unique"] is not None:
            repo.add_unique(s, w.id, meter, ctx["rating_period"], ctx["unique"])

    def record_usage(self, req: UsageRequest) -> dict[str, Any]:
        return self.executor.call(self.usage_fn(req), key=req.customer_id)

    async def arecord_usage(self, req: UsageRequest) -> dict[str, Any]:
        return await self.executor.acall(self.usage_fn(req), key=req.customer_id)

    def usage_fn(self, req: UsageRequest) -> Callable[[Tx], dict[str, Any]]:
        if not req.idempotency_key or len(req.idempotency_key) > 255:
            raise InvalidInput(
                "idempotency_key is required (1-255 characters)", code="invalid_idempotency_key"
            )
        props = check_json(dict(req.properties or {}), "properties")
        qty = Decimal(1) if req.quantity is None else _dec(req.quantity)
        h = request_hash({"meter": req.meter, "quantity": qty, "properties": props})
        cat = self.catalog()

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = self._wallet(s, req.customer_id)
            prior = repo.find_operation(s, w.id, "usage", req.idempotency_key)
            if prior is not None:
                # a replay returns the stored result, even if the meter has left the catalog since
                check_replay(prior.request_hash, h, req.idempotency_key)
                st = self._state(s, w)
                return {**prior.result, "balance": st.balance(now), "duplicate": True}
            self._check_active(w)
            st = self._state(s, w)
            meta: dict[str, dict[str, Any]] = {}
            if self.before_spend is not None:
                self.before_spend(s, w, st, meta, cat, now)
            rating, ctx = self._meter_context(
                s, w, cat, req.meter, qty, props, now, quantity_given=req.quantity is not None
            )
            qty_recorded: Decimal = ctx["quantity"]
            op_id = new_id("evt")
            draw = st.draw(
                rating.amount, now, kind="debit", operation_id=op_id, meter=req.meter, exclude=ctx["exclude"]
            )
            used_allowance = "plan_allowance" in draw.sources(st.grants)
            self._write_counters(s, w, req.meter, ctx, qty_recorded, used_allowance, now)
            result = {
                "event_id": op_id,
                "charged": rating.amount,
                "unit": cat.credits.name,
                "meter": req.meter,
                "quantity": format(qty_recorded.normalize(), "f"),
                "catalog_version": cat.version,
                "created_at": iso(now),
            }
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=req.customer_id,
                kind="usage",
                idempotency_key=req.idempotency_key,
                request_hash=h,
                amount=rating.amount,
                meter=req.meter,
                quantity=qty_recorded,
                properties=props or None,
                catalog_version=cat.version,
                api_key_id=req.api_key_id,
                result=result,
                created_at=now,
            )
            repo.persist(s, st, now, grant_meta=meta)
            return {**result, "balance": st.balance(now), "duplicate": False}

        return fn

    # ================================================================ holds
    def create_hold(self, customer_id: str, **kw: Any) -> dict[str, Any]:
        """Reserve credits (see :meth:`hold_fn` for the options) and wait for the commit."""
        return self.executor.call(self.hold_fn(customer_id, **kw), key=customer_id)

    def hold_fn(
        self,
        customer_id: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        meter: str | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
        ttl_seconds: int | None = None,
        api_key_id: str | None = None,
    ) -> Callable[[Tx], dict[str, Any]]:
        if not idempotency_key or len(idempotency_key) > 255:
            raise InvalidInput(
                "idempotency_key is required (1-255 characters)", code="invalid_idempotency_key"
            )
        if amount is None and meter is None:
            raise InvalidInput("give an amount, or a meter and an estimated quantity", code="invalid_hold")
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < 0):
            raise InvalidInput("amount must be an integer >= 0", code="invalid_amount")
        ttl = self.hold_default_ttl if ttl_seconds is None else ttl_seconds
        if not 1 <= ttl <= self.hold_max_ttl:
            raise InvalidInput(f"ttl_seconds must be between 1 and {self.hold_max_ttl}", code="invalid_ttl")
        props = check_json(dict(properties or {}), "properties")
        qty = None if meter is None else (Decimal(1) if quantity is None else _dec(quantity))
        cat = self.catalog()
        h = request_hash({"amount": amount, "meter": meter, "quantity": qty, "properties": props, "ttl": ttl})

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = self._wallet(s, customer_id)
            prior = repo.find_operation(s, w.id, "hold", idempotency_key)
            if prior is not None:
                check_replay(prior.request_hash, h, idempotency_key)
                hold = repo.find_hold(s, prior.id)
                return {**self.hold_view(hold), "duplicate": True}
            self._check_active(w)
            st = self._state(s, w)
            meta: dict[str, dict[str, Any]] = {}
            if self.before_spend is not None:
                self.before_spend(s, w, st, meta, cat, now)
            exclude: frozenset[str] = frozenset()
            held = amount
            hold_qty = qty
            if meter is not None and qty is not None:
                rating, ctx = self._meter_context(
                    s, w, cat, meter, qty, props, now, quantity_given=quantity is not None
                )
                exclude = ctx["exclude"]
                hold_qty = ctx["quantity"]
                if held is None:
                    held = rating.amount
            assert held is not None
            op_id = new_id("hop")
            hold_id = new_id("hld")
            st.draw(held, now, kind="hold", operation_id=op_id, hold_id=hold_id, meter=meter, exclude=exclude)
            expires = now + timedelta(seconds=ttl)
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=customer_id,
                kind="hold",
                idempotency_key=idempotency_key,
                request_hash=h,
                amount=held,
                meter=meter,
                quantity=hold_qty,
                properties=props or None,
                catalog_version=cat.version,
                ref_id=hold_id,
                api_key_id=api_key_id,
                created_at=now,
            )
            row = {
                "id": hold_id,
                "wallet_id": w.id,
                "customer_id": customer_id,
                "operation_id": op_id,
                "amount": held,
                "status": "open",
                "meter": meter,
                "quantity": hold_qty,
                "properties": props or None,
                "catalog_version": cat.version,
                "expires_at": expires,
                "created_at": now,
            }
            repo.insert_hold(s, **row)
            repo.persist(s, st, now, grant_meta=meta)
            return {**self.hold_view(row), "balance": st.balance(now), "duplicate": False}

        return fn

    def hold_view(self, hold: Any) -> dict[str, Any]:
        get: Callable[[str], Any] = hold.get if isinstance(hold, dict) else lambda k: getattr(hold, k, None)
        return {
            "id": get("id"),
            "customer_id": get("customer_id"),
            "amount": get("amount"),
            "status": get("status"),
            "meter": get("meter"),
            "quantity": None
            if get("quantity") is None
            else format(Decimal(get("quantity")).normalize(), "f"),
            "expires_at": iso(get("expires_at")),
            "settled_amount": get("settled_amount"),
            "unit": self.unit,
        }

    def resolve_hold(
        self,
        customer_id: str | None,
        hold_id: str,
        *,
        action: str,
        amount: int | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        fn = self.resolve_fn(
            customer_id, hold_id, action=action, amount=amount, quantity=quantity, properties=properties
        )
        return self.executor.call(fn, key=customer_id or self._owner("hold", hold_id))

    def _owner(self, what: str, ref: str) -> str | None:
        """The customer behind a hold or a charge: the key that routes a command on them, so it
        takes their lane and its place in the lock order like every other command of theirs."""
        owner = self.executor.call(lambda s: repo.owner_of(s, what, ref))
        return None if owner is None else str(owner)

    def resolve_fn(
        self,
        customer_id: str | None,
        hold_id: str,
        *,
        action: str,
        amount: int | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
    ) -> Callable[[Tx], dict[str, Any]]:
        """Settle (for an amount, or for the actual quantity rated now, or both: the amount is
        charged and the quantity counted) or release a hold. A hold resolves once."""
        if action not in ("settle", "release"):
            raise InvalidInput("action must be settle or release")
        if action == "settle":
            if amount is None and quantity is None and not properties:
                raise InvalidInput(
                    "settle takes an amount, a quantity, or (tokens meters) the actual token counts "
                    "in properties",
                    code="invalid_settle",
                )
            if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount < 0):
                raise InvalidInput("amount must be an integer >= 0", code="invalid_amount")
        qty = None if quantity is None else _dec(quantity)
        extra_props = check_json(dict(properties or {}), "properties")
        h = request_hash({"action": action, "amount": amount, "quantity": qty, "properties": extra_props})
        cat = self.catalog()

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            hold = repo.get_hold(s, hold_id)
            if hold is None or (customer_id is not None and hold.customer_id != customer_id):
                raise NotFound(f"hold {hold_id!r} not found", code="hold_not_found")
            w = repo.lock_wallet(s, hold.wallet_id)
            hold = repo.get_hold(s, hold_id)  # re-read under the wallet lock
            assert hold is not None and w is not None
            if hold.status != "open":
                if hold.resolution_hash == h and hold.result is not None:
                    return {**hold.result, "duplicate": True}
                raise Conflict(f"hold {hold_id} is already {hold.status}", code="hold_resolved")
            if action == "settle" and hold.expires_at <= now:
                raise Conflict(
                    f"hold {hold_id} expired at {iso(hold.expires_at)}; its credits go back to the wallet",
                    code="hold_expired",
                )
            held = repo.drawn_by(s, hold_id=hold_id)
            st = self._state(s, w, grant_ids=tuple(g for g, _ in held.parts))
            op_id = new_id("sop" if action == "settle" else "rop")
            meta: dict[str, dict[str, Any]] = {}
            final = 0
            status = "released"
            counted = qty if qty is not None else hold.quantity
            props = {**(hold.properties or {}), **extra_props}
            if action == "settle" and amount is None and qty is None:
                m = cat.meters.get(hold.meter) if hold.meter else None
                if m is None or m.price is None or m.price.model != "tokens":
                    raise InvalidInput(
                        "settle takes an amount or a quantity (properties alone settle only a "
                        "tokens meter's hold)",
                        code="invalid_settle",
                    )
            if action == "settle":
                status = "settled"
                ctx: dict[str, Any] | None = None
                if hold.meter is not None and hold.meter not in cat.meters:
                    # the meter left the catalog since the hold was made: its credits are not
                    # stranded, an amount settles it (nothing to count), a release returns them
                    if amount is None:
                        raise InvalidInput(
                            f"meter {hold.meter!r} is no longer in the catalog: settle this hold "
                            "with an amount, or release it",
                            code="unknown_meter",
                        )
                    counted = None
                    final = amount
                elif hold.meter is not None and counted is not None:
                    rating, ctx = self._meter_context(
                        s,
                        w,
                        cat,
                        hold.meter,
                        counted,
                        props,
                        now,
                        enforce_hard_caps=False,
                        quantity_given=qty is not None,
                    )
                    counted = ctx["quantity"]
                    final = rating.amount if amount is None else amount
                elif amount is not None:
                    final = amount
                else:
                    raise InvalidInput(
                        "this hold has no meter: settle it with an amount", code="invalid_settle"
                    )
                if final <= hold.amount:
                    self._give_back_hold(
                        st, meta, held, hold.amount - final, now, operation_id=op_id, hold_id=hold_id
                    )
                    extra = Draw(())
                else:
                    extra = st.draw(
                        final - hold.amount,
                        now,
                        kind="debit",
                        operation_id=op_id,
                        hold_id=hold_id,
                        meter=hold.meter,
                        exclude=ctx["exclude"] if ctx else frozenset(),
                    )
                if ctx is not None and hold.meter is not None and counted is not None:
                    used_allowance = "plan_allowance" in merge_draws(held, extra).sources(st.grants)
                    self._write_counters(s, w, hold.meter, ctx, counted, used_allowance, now)
            else:
                self._give_back_hold(st, meta, held, hold.amount, now, operation_id=op_id, hold_id=hold_id)
            result = {
                "id": hold_id,
                "status": status,
                "amount": hold.amount,
                "settled_amount": final if action == "settle" else None,
                "charged": final,
                "operation_id": op_id,
                "unit": self.unit,
            }
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=hold.customer_id,
                # "settle" and "release" have key namespaces of their own: no caller-chosen
                # usage key can collide with a hold's resolution
                kind=action,
                idempotency_key=f"hold:{hold_id}",
                request_hash=h,
                amount=final,
                meter=hold.meter,
                quantity=counted,
                properties=props or None,
                catalog_version=cat.version if action == "settle" else hold.catalog_version,
                ref_id=hold_id,
                result=result,
                created_at=now,
            )
            repo.update_hold(
                s,
                hold_id,
                status=status,
                settled_amount=final if action == "settle" else None,
                resolution_hash=h,
                resolution_operation_id=op_id,
                result=result,
                resolved_at=now,
            )
            repo.persist(s, st, now, grant_meta=meta)
            return {**result, "balance": st.balance(now), "duplicate": False}

        return fn

    # ================================================================ refunds
    def refund(
        self, operation_id: str, *, idempotency_key: str, amount: int | None = None, reason: str | None = None
    ) -> dict[str, Any]:
        if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0):
            raise InvalidInput("amount must be a positive integer", code="invalid_amount")
        if not idempotency_key:
            raise InvalidInput("idempotency_key is required", code="invalid_idempotency_key")
        h = request_hash({"operation_id": operation_id, "amount": amount})

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            op = repo.get_operation(s, operation_id)
            if op is None or op.kind not in CHARGE_KINDS:
                raise NotFound(f"charge {operation_id!r} not found", code="charge_not_found")
            w = repo.lock_wallet(s, op.wallet_id)
            assert w is not None
            prior = repo.find_operation(s, w.id, "refund", idempotency_key)
            if prior is not None:
                check_replay(prior.request_hash, h, idempotency_key)
                return {k: v for k, v in prior.result.items() if k != "attribution"} | {"duplicate": True}
            op = repo.get_operation(s, operation_id)
            assert op is not None
            refundable = op.amount - op.refunded
            want = refundable if amount is None else amount
            if want <= 0 or want > refundable:
                raise Conflict(
                    f"can refund at most {refundable} of this charge",
                    code="refund_exceeds_charge",
                    details={"refundable": refundable},
                )
            hold_id = op.ref_id if op.ref_id and op.ref_id.startswith("hld_") else None
            drawn = repo.drawn_by(s, hold_id=hold_id) if hold_id else repo.drawn_by(s, operation_id=op.id)
            left = subtract_draws(drawn, repo.refund_attributions(s, op.id))
            st = self._state(s, w, grant_ids=tuple(g for g, _ in left.parts))
            ref_id = new_id("ref")
            attribution, unplaced = st.give_back(
                left, want, now, kind="refund", operation_id=ref_id, live_only=True
            )
            meta: dict[str, dict[str, Any]] = {}
            new_grant_id = None
            if unplaced:
                new_grant_id = new_grant(
                    st, meta, amount=unplaced, source="refund", now=now, operation_id=ref_id, note=reason
                ).id
            result = {
                "id": ref_id,
                "charge_id": op.id,
                "amount": want,
                "to_original_grants": want - unplaced,
                "new_grant_id": new_grant_id,
                "reason": reason,
                "unit": self.unit,
            }
            repo.insert_operation(
                s,
                id=ref_id,
                wallet_id=w.id,
                customer_id=op.customer_id,
                kind="refund",
                idempotency_key=idempotency_key,
                request_hash=h,
                amount=want,
                ref_id=op.id,
                properties={"reason": reason} if reason else None,
                result={**result, "attribution": attribution.to_json()},
                created_at=now,
            )
            repo.add_refunded(s, op.id, want)
            repo.persist(s, st, now, grant_meta=meta)
            return {**result, "balance": st.balance(now), "duplicate": False}

        return self.executor.call(fn, key=self._owner("charge", operation_id))

    def set_overdraft(self, customer_id: str, limit: int) -> dict[str, Any]:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
            raise InvalidInput("overdraft limit must be an integer >= 0", code="invalid_amount")

        def fn(s: Tx) -> dict[str, Any]:
            w = self._wallet(s, customer_id)
            repo.set_wallet(s, w.id, overdraft_limit=limit, updated_at=self.clock.now())
            return {"customer_id": customer_id, "overdraft_limit": limit, "overdraft_used": w.overdraft_used}

        return self.executor.call(fn, key=customer_id)

    # ================================================================ sweeper
    def sweep(self, *, limit: int = 500) -> dict[str, int]:
        """Release expired holds, then expire grants past their end. Safe to run anywhere, any time.

        Each wallet is swept in its own unit of work, keyed by its customer like any other
        command, so the sweeper never holds two wallets' locks at once (no deadlocks with
        charges) and its work is batched with the customer's other commands. On PostgreSQL a
        wallet another transaction holds is skipped (``SKIP LOCKED``), so several workers share
        the sweep without doing a wallet twice or waiting; what is skipped is swept next run."""
        now = self.clock.now()
        holds, wallets = self.executor.call(
            lambda s: (
                repo.expired_open_holds(s, now, limit),
                repo.wallets_with_expired_grants(s, now, limit),
            )
        )
        released = [self.executor.submit(self._expire_hold_fn(h.id), key=h.customer_id) for h in holds]
        expired = [self.executor.submit(self._expire_grants_fn(w.id), key=w.customer_id) for w in wallets]
        return {
            "holds_released": sum(f.result() for f in released),
            "grants_expired": sum(f.result() for f in expired),
        }

    def _expire_hold_fn(self, hold_id: str) -> Callable[[Tx], int]:
        def fn(s: Tx) -> int:
            now = self.clock.now()
            h = repo.get_hold(s, hold_id)
            if h is None or h.status != "open" or h.expires_at > now:
                return 0
            w = repo.try_lock_wallet(s, h.wallet_id)  # busy (another worker): next run
            h = repo.get_hold(s, hold_id)  # re-read under the wallet lock
            if w is None or h is None or h.status != "open":
                return 0
            held = repo.drawn_by(s, hold_id=h.id)
            st = self._state(s, w, grant_ids=tuple(g for g, _ in held.parts))
            op_id = new_id("rop")
            meta: dict[str, dict[str, Any]] = {}
            self._give_back_hold(st, meta, held, h.amount, now, operation_id=op_id, hold_id=h.id)
            result = {
                "id": h.id,
                "status": "expired",
                "amount": h.amount,
                "settled_amount": None,
                "charged": 0,
                "operation_id": op_id,
                "unit": self.unit,
            }
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=h.customer_id,
                kind="release",
                idempotency_key=f"hold:{h.id}",
                amount=0,
                ref_id=h.id,
                result=result,
                created_at=now,
            )
            repo.update_hold(
                s,
                h.id,
                status="expired",
                resolution_operation_id=op_id,
                result=result,
                resolution_hash="expired",
                resolved_at=now,
            )
            repo.persist(s, st, now, grant_meta=meta)
            return 1

        return fn

    def _expire_grants_fn(self, wallet_id: str) -> Callable[[Tx], int]:
        def fn(s: Tx) -> int:
            now = self.clock.now()
            w = repo.try_lock_wallet(s, wallet_id)  # busy (another worker): next run
            if w is None:
                return 0
            st = self._state(s, w)
            op_id = new_id("exp")
            gone = st.expire(now, operation_id=op_id)
            if not gone:
                return 0
            total = sum(a for _, a in gone)
            repo.insert_operation(
                s,
                id=op_id,
                wallet_id=w.id,
                customer_id=w.customer_id,
                kind="expire",
                idempotency_key=op_id,
                amount=total,
                properties={"grants": [g for g, _ in gone]},
                created_at=now,
            )
            repo.persist(s, st, now)
            return len(gone)

        return fn
