"""Charging a metered event (``POST /v1/usage``), and an event's effect on its meter, which
holds share: rating, the period counters, caps.

:func:`meter_event` reads what the rules need (the period counters, whether a distinct value
was seen, what open holds reserve) and applies :func:`~tollkeep.ledger.rules.check_caps`;
:func:`write_counters` writes what :func:`~tollkeep.ledger.rules.counter_updates` returns.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tollkeep.catalog import Cap, Catalog, Meter
from tollkeep.kit.clock import SubscriptionPeriods, usage_period
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import InvalidInput
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import keyspend, rules
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import check_replay
from tollkeep.ledger.kinds import EntryKind, GrantSource, OpKind
from tollkeep.ledger.requests import UsageRequest
from tollkeep.ledger.results import UsageResult, answer, replayed
from tollkeep.ledger.rules import GrantMeta
from tollkeep.pricing import Rating, needs_aggregate, rate

__all__ = ["Metering", "meter_event", "subscription_periods", "usage_command", "write_counters"]

_ZERO = Decimal(0)
_NO_EXCLUSION: frozenset[str] = frozenset()


def subscription_periods(w: Any) -> SubscriptionPeriods | None:
    """The periods of the subscription billing the wallet's plan, from the locked wallet row
    (``wallets.period_*``, written by the plans domain): None when it carries none."""
    if w.period_anchor is None or w.period_since is None or w.period_until is None:
        return None
    return SubscriptionPeriods(w.period_anchor, w.period_since, w.period_until)


@dataclass(slots=True)
class Metering:
    """What an event does to its meter, worked out before anything is written.

    ``quantity`` is what the event records and counts: the one given, except on a tokens meter,
    where it is always ``input_tokens + output_tokens``. ``counters`` is None when no aggregate
    or cap reads the meter's counters (nothing to keep up to date)."""

    meter: Meter
    quantity: Decimal
    exclude: frozenset[str] = _NO_EXCLUSION
    counters: dict[str, tuple[Decimal, Decimal]] | None = None
    periods: tuple[str, ...] = ()
    rating_period: str = ""
    step: Decimal = _ZERO  # what the event adds to the counters (unique_count: 0 or 1)
    unique: str | None = None  # a distinct value seen for the first time this period


def meter_event(
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
) -> tuple[Rating, Metering]:
    """Rate an event and work out its effect on counters and caps (nothing is written).

    A ``quantity`` given on a tokens meter that contradicts the token counts is refused
    (``quantity_mismatch``). Hard caps count what open holds have reserved on the meter, so
    parallel holds cannot all pass the check; settling a hold does not enforce them
    (``enforce_hard_caps`` False: the work is done; its capacity was reserved)."""
    m = cat.meter(meter)
    plan = cat.plan(w.plan) if w.plan else None
    caps: tuple[Cap, ...] = plan.caps_for(meter) if plan else ()
    needs_agg = needs_aggregate(m)
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
        quantity = measured
        if not needs_agg and not caps:
            return first, Metering(m, quantity)  # rated once: a tokens price reads no aggregate
    if not needs_agg and not caps:
        return rate(cat, meter, quantity, properties=props), Metering(m, quantity)
    # the month of tiered rating and each cap's period: the subscription's own when the wallet
    # carries one and ``now`` is inside it, else the calendar's (kit.clock.usage_period)
    sub = subscription_periods(w)
    _, _, rating_key = usage_period("month", now, sub)
    periods = tuple(sorted({rating_key} | {usage_period(c.period, now, sub)[2] for c in caps}))
    counters = repo.get_counters(s, w.id, meter, periods)
    before = counters.get(rating_key, (_ZERO, _ZERO))[0]
    step = quantity
    unique = None
    if m.aggregation == "unique_count":
        prop = m.property or "value"
        if prop not in props or props[prop] is None:
            raise InvalidInput(
                f"meter {meter!r} counts distinct {prop!r}: put it in properties", code="missing_property"
            )
        value = str(props[prop])[:255]
        seen = repo.unique_seen(s, w.id, meter, rating_key, value)
        step = Decimal(0) if seen else Decimal(1)
        unique = None if seen else value
    rating = rate(
        cat,
        meter,
        step if m.aggregation == "unique_count" else quantity,
        properties=props,
        period_before=before,
    )
    is_max = m.aggregation == "max"
    reserved = _ZERO
    if enforce_hard_caps and any(c.mode == "hard" for c in caps):
        held = repo.open_hold_quantities(s, w.id, meter)
        reserved = max(held, default=_ZERO) if is_max else sum(held, _ZERO)
    exclude = rules.check_caps(
        caps,
        counters,
        now,
        meter=meter,
        plan=w.plan,
        is_max=is_max,
        step=step,
        reserved=reserved,
        enforce_hard=enforce_hard_caps,
        sub=sub,
    )
    return rating, Metering(m, quantity, exclude, counters, periods, rating_key, step, unique)


def write_counters(s: Tx, wallet_id: str, meter: str, mt: Metering, *, used_allowance: bool) -> None:
    """Count the event in the meter's period counters (and remember a new distinct value)."""
    if mt.counters is None:
        return
    for period, value, allowance_used, existed in rules.counter_updates(
        mt.counters,
        mt.periods,
        is_max=mt.meter.aggregation == "max",
        quantity=mt.quantity,
        step=mt.step,
        used_allowance=used_allowance,
    ):
        repo.put_counter(s, wallet_id, meter, period, value, allowance_used, exists=existed)
    if mt.unique is not None:
        repo.add_unique(s, wallet_id, meter, mt.rating_period, mt.unique)


def usage_command(ctx: LedgerContext, req: UsageRequest) -> Command[dict[str, Any]]:
    """Charge a metered event, once per (wallet, idempotency key)."""
    req = req.validate()
    h = req.fingerprint()
    qty = req.counted
    props = req.properties or {}
    cat = ctx.catalog()
    display = cat.credits.display

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, prior = ctx.wallet_and_prior(s, req.customer_id, OpKind.USAGE, req.idempotency_key)
        if prior is not None:
            # a replay returns the stored result, even if the meter has left the catalog since
            check_replay(prior.request_hash, h, req.idempotency_key)
            out = replayed(prior.result, balance=ctx.wallet_balance(s, w, now))
            out["display"] = display(charged=out.get("charged"), balance=out["balance"])
            return out
        ctx.check_active(w)
        st = ctx.state(s, w)
        meta: GrantMeta = {}
        if ctx.before_spend is not None:
            ctx.before_spend(s, w, st, meta, cat, now)
        rating, mt = meter_event(
            s, w, cat, req.meter, qty, props, now, quantity_given=req.quantity is not None
        )
        day = keyspend.day_of(now)
        spender = keyspend.admit(s, ctx.key_limits, req.api_key_id, rating.amount, day)
        op_id = new_id("evt")
        draw = ctx.draw(
            s,
            st,
            rating.amount,
            now,
            kind=EntryKind.DEBIT,
            operation_id=op_id,
            meter=req.meter,
            exclude=mt.exclude,
        )
        write_counters(
            s, w.id, req.meter, mt, used_allowance=GrantSource.PLAN_ALLOWANCE in draw.sources(st.grants)
        )
        keyspend.count(s, spender, day, spent=rating.amount)
        result = UsageResult(
            op_id, rating.amount, cat.credits.ledger_name, req.meter, mt.quantity, cat.version, now
        ).to_json()
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=req.customer_id,
            kind=OpKind.USAGE,
            idempotency_key=req.idempotency_key,
            request_hash=h,
            amount=rating.amount,
            meter=req.meter,
            quantity=mt.quantity,
            properties=req.properties or None,
            catalog_version=cat.version,
            api_key_id=req.api_key_id,
            result=result,
            created_at=now,
        )
        repo.persist(s, st, now, grant_meta=meta)
        balance = ctx.balance(s, st, now)
        ctx.after_spend(s, cat, w, st, balance, rating.amount, op_id)
        out = answer(result, balance)
        out["display"] = display(charged=rating.amount, balance=balance)
        return out

    return Command(fn, req.customer_id)
