"""Holds: reserve credits now, settle (charge) or release them later, once; the sweeper
releases them at ``expires_at``.

A hold takes its credits at once (journal entries tagged with the hold id). Whatever a hold
gives back (release, expiry, settling for less) goes through
:func:`~tollkeep.ledger.rules.give_back_hold`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, Forbidden, InvalidInput, NotFound
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import keyspend
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import Draw, check_replay, merge_draws
from tollkeep.ledger.kinds import EntryKind, GrantSource, HoldStatus, OpKind
from tollkeep.ledger.requests import ExtendRequest, HoldRequest, ReleaseRequest, SettleRequest
from tollkeep.ledger.results import HoldResolution, HoldView, answer, replayed
from tollkeep.ledger.rules import GrantMeta, give_back_hold
from tollkeep.ledger.usage import Metering, meter_event, write_counters

__all__ = ["expire_hold_command", "extend_command", "hold_command", "resolve_command"]


# the integer amounts a hold's answers show a display value of
HOLD_AMOUNTS = ("amount", "settled_amount", "balance")
RESOLUTION_AMOUNTS = ("amount", "settled_amount", "charged", "balance")


def hold_command(ctx: LedgerContext, req: HoldRequest) -> Command[dict[str, Any]]:
    """Reserve credits, once per (wallet, idempotency key)."""
    req = req.validate(default_ttl=ctx.hold_default_ttl, max_ttl=ctx.hold_max_ttl)
    assert req.ttl_seconds is not None
    ttl = timedelta(seconds=req.ttl_seconds)
    qty = req.counted
    props = req.properties or {}
    cat = ctx.catalog()
    h = req.fingerprint()

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, prior = ctx.wallet_and_prior(s, req.customer_id, OpKind.HOLD, req.idempotency_key)
        if prior is not None:
            check_replay(prior.request_hash, h, req.idempotency_key)
            view = HoldView.of(repo.find_hold(s, prior.id), ctx.unit).to_json()
            return ctx.shown(replayed(view, balance=ctx.wallet_balance(s, w, now)), *HOLD_AMOUNTS)
        ctx.check_active(w)
        st = ctx.state(s, w)
        meta: GrantMeta = {}
        if ctx.before_spend is not None:
            ctx.before_spend(s, w, st, meta, cat, now)
        exclude: frozenset[str] = frozenset()
        held = req.amount
        hold_qty = qty
        if req.meter is not None and qty is not None:
            rating, mt = meter_event(
                s, w, cat, req.meter, qty, props, now, quantity_given=req.quantity is not None
            )
            exclude = mt.exclude
            hold_qty = mt.quantity
            if held is None:
                held = rating.amount
        assert held is not None
        day = keyspend.day_of(now)
        spender = keyspend.admit(s, ctx.key_limits, req.api_key_id, held, day)
        op_id = new_id("hop")
        hold_id = new_id("hld")
        ctx.draw(
            s,
            st,
            held,
            now,
            kind=EntryKind.HOLD,
            operation_id=op_id,
            hold_id=hold_id,
            meter=req.meter,
            exclude=exclude,
        )
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=req.customer_id,
            kind=OpKind.HOLD,
            idempotency_key=req.idempotency_key,
            request_hash=h,
            amount=held,
            meter=req.meter,
            quantity=hold_qty,
            properties=req.properties or None,
            catalog_version=cat.version,
            ref_id=hold_id,
            api_key_id=req.api_key_id,
            created_at=now,
        )
        row = {
            "id": hold_id,
            "wallet_id": w.id,
            "customer_id": req.customer_id,
            "operation_id": op_id,
            "amount": held,
            "status": HoldStatus.OPEN,
            "meter": req.meter,
            "quantity": hold_qty,
            "properties": req.properties or None,
            "catalog_version": cat.version,
            "expires_at": now + ttl,
            "created_at": now,
            "opened_by": req.opened_by,
            "api_key_id": spender,  # the buyer key its amount counts against (None: none)
        }
        repo.insert_hold(s, **row)
        keyspend.count(s, spender, day, held=held)
        repo.persist(s, st, now, grant_meta=meta)
        balance = ctx.balance(s, st, now)
        ctx.after_spend(s, cat, w, st, balance, held, op_id)
        return ctx.shown(answer(HoldView.of(row, ctx.unit).to_json(), balance), *HOLD_AMOUNTS)

    return Command(fn, req.customer_id)


def resolve_command(
    ctx: LedgerContext, req: SettleRequest | ReleaseRequest, *, key: str | None
) -> Command[dict[str, Any]]:
    """Settle or release a hold; a hold resolves once. ``key``: the hold's customer."""
    req = req.validate()
    h = req.fingerprint()
    cat = ctx.catalog()
    settle = req if isinstance(req, SettleRequest) else None
    amount = settle.amount if settle else None
    qty = settle.quantity if settle else None
    extra_props = (settle.properties if settle else None) or {}
    hold_id = req.hold_id

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, hold, held = _locked_hold(s, req.customer_id, hold_id, by_server=req.by_server, with_draw=True)
        if hold.status != HoldStatus.OPEN:
            if hold.resolution_hash == h and hold.result is not None:
                out = replayed(hold.result, balance=ctx.wallet_balance(s, w, now))
                return ctx.shown(out, *RESOLUTION_AMOUNTS)
            raise Conflict(f"hold {hold_id} is already {hold.status}", code="hold_resolved")
        if settle and hold.expires_at <= now:
            raise Conflict(
                f"hold {hold_id} expired at {iso(hold.expires_at)}; its credits go back to the wallet",
                code="hold_expired",
            )
        assert held is not None
        st = ctx.state(s, w, grant_ids=tuple(g for g, _ in held.parts))
        op_id = new_id("sop" if settle else "rop")
        key_day = keyspend.day_of(hold.created_at)
        meta: GrantMeta = {}
        final = 0
        status = HoldStatus.RELEASED
        counted = qty if qty is not None else hold.quantity
        props = {**(hold.properties or {}), **extra_props}
        if settle:
            status = HoldStatus.SETTLED
            final, counted, mt = _settle_amount(s, w, cat, hold, amount, qty, counted, props, now)
            if final <= hold.amount:
                give_back_hold(st, meta, held, hold.amount - final, now, operation_id=op_id, hold_id=hold_id)
                extra = Draw(())
            else:
                # settling for more than was held is a new charge for the key's limits (on the
                # hold's day); for no more, never refused: it was reserved
                keyspend.admit(s, ctx.key_limits, hold.api_key_id, final - hold.amount, key_day)
                extra = ctx.draw(
                    s,
                    st,
                    final - hold.amount,
                    now,
                    kind=EntryKind.DEBIT,
                    operation_id=op_id,
                    hold_id=hold_id,
                    meter=hold.meter,
                    exclude=mt.exclude if mt else frozenset(),
                )
            if mt is not None and hold.meter is not None and counted is not None:
                used_allowance = GrantSource.PLAN_ALLOWANCE in merge_draws(held, extra).sources(st.grants)
                write_counters(s, w.id, hold.meter, mt, used_allowance=used_allowance)
        else:
            give_back_hold(st, meta, held, hold.amount, now, operation_id=op_id, hold_id=hold_id)
        result = HoldResolution(
            hold_id, status, hold.amount, final if settle else None, final, op_id, ctx.unit
        ).to_json()
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=hold.customer_id,
            # "settle" and "release" have key namespaces of their own: no caller-chosen
            # usage key can collide with a hold's resolution
            kind=req.action,
            idempotency_key=f"hold:{hold_id}",
            request_hash=h,
            amount=final,
            meter=hold.meter,
            quantity=counted,
            properties=props or None,
            catalog_version=cat.version if settle else hold.catalog_version,
            ref_id=hold_id,
            result=result,
            created_at=now,
        )
        repo.resolve_hold(
            s,
            hold_id,
            status=status,
            settled_amount=final if settle else None,
            resolution_hash=h,
            resolution_operation_id=op_id,
            result=result,
            resolved_at=now,
        )
        keyspend.count(s, hold.api_key_id, key_day, spent=final, held=-hold.amount)
        repo.persist(s, st, now, grant_meta=meta)
        balance = ctx.balance(s, st, now)
        if settle and final > hold.amount:  # settling for more than was held draws the rest now
            ctx.after_spend(s, cat, w, st, balance, final - hold.amount, op_id)
        return ctx.shown(answer(result, balance), *RESOLUTION_AMOUNTS)

    return Command(fn, key)


def _locked_hold(
    s: Tx, customer_id: str | None, hold_id: str, *, by_server: bool, with_draw: bool = False
) -> tuple[Any, Any, Draw | None]:
    """(the locked wallet, the hold read under its lock, and with ``with_draw`` what it took)
    for a caller who may act on it: 404 ``hold_not_found`` (none, or another customer's), 403
    ``hold_owned_by_server``.

    A customer's call (the gateways' settle and release) locks their wallet first, then reads
    the hold with its entries: two statements. The admin's (no customer) reads the hold to find
    its wallet, locks it, and reads the hold again under the lock."""
    if customer_id is not None:
        w = repo.lock_wallet_of_customer(s, customer_id)
        hold, held = _read_hold(s, hold_id, with_draw) if w is not None else (None, None)
        if hold is None or w is None or hold.customer_id != customer_id:
            raise NotFound(f"hold {hold_id!r} not found", code="hold_not_found")
    else:
        found = repo.get_hold(s, hold_id)
        if found is None:
            raise NotFound(f"hold {hold_id!r} not found", code="hold_not_found")
        w = repo.lock_wallet(s, found.wallet_id)
        hold, held = _read_hold(s, hold_id, with_draw)  # re-read under the wallet lock
        assert hold is not None and w is not None
    if hold.opened_by and customer_id is not None and not by_server:
        # the seller's backend reserved these credits: the buyer's key must not be able to
        # release them (or settle at 0) and undo the seller's charge, nor keep them reserved
        raise Forbidden(
            "this hold was opened with a server key: only a server key can settle, release or extend it",
            code="hold_owned_by_server",
        )
    return w, hold, held


def _read_hold(s: Tx, hold_id: str, with_draw: bool) -> tuple[Any, Draw | None]:
    if with_draw:
        return repo.hold_and_draw(s, hold_id)
    return repo.get_hold(s, hold_id), None


def extend_command(ctx: LedgerContext, req: ExtendRequest, *, key: str | None) -> Command[dict[str, Any]]:
    """Move an open, unexpired hold's expiry to ``ttl_seconds`` from now (a hold is never
    shortened: the later of the two stays). No credits move, nothing is journaled; sending
    it again just sets the expiry again. ``key``: the hold's customer."""
    req = req.validate(max_ttl=ctx.hold_max_ttl)
    ttl = timedelta(seconds=req.ttl_seconds)

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, hold, _ = _locked_hold(s, req.customer_id, req.hold_id, by_server=req.by_server)
        if hold.status != HoldStatus.OPEN:
            raise Conflict(f"hold {req.hold_id} is already {hold.status}", code="hold_resolved")
        if hold.expires_at <= now:
            raise Conflict(
                f"hold {req.hold_id} expired at {iso(hold.expires_at)}; its credits go back to the wallet",
                code="hold_expired",
            )
        expires_at = max(hold.expires_at, now + ttl)
        if expires_at != hold.expires_at:
            repo.set_hold_expiry(s, req.hold_id, expires_at)
        view = HoldView.of(hold, ctx.unit).to_json()
        view["expires_at"] = iso(expires_at)
        return ctx.shown({**view, "balance": ctx.wallet_balance(s, w, now)}, *HOLD_AMOUNTS)

    return Command(fn, key)


def _settle_amount(
    s: Tx,
    w: Any,
    cat: Any,
    hold: Any,
    amount: int | None,
    qty: Any,
    counted: Any,
    props: dict[str, Any],
    now: Any,
) -> tuple[int, Any, Metering | None]:
    """What settling charges, the quantity it counts, and its effect on the meter (None: none).
    An amount is charged as is; a quantity (or a tokens meter's actual token counts) is rated
    now with the active catalog; with both, the amount is charged and the quantity counted."""
    if amount is None and qty is None:
        m = cat.meters.get(hold.meter) if hold.meter else None
        if m is None or m.price is None or m.price.model != "tokens":
            raise InvalidInput(
                "settle takes an amount or a quantity (properties alone settle only a tokens meter's hold)",
                code="invalid_settle",
            )
    if hold.meter is not None and hold.meter not in cat.meters:
        # the meter left the catalog since the hold was made: its credits are not stranded, an
        # amount settles it (nothing to count), a release returns them
        if amount is None:
            raise InvalidInput(
                f"meter {hold.meter!r} is no longer in the catalog: settle this hold with an amount, "
                "or release it",
                code="unknown_meter",
            )
        return amount, None, None
    if hold.meter is not None and counted is not None:
        rating, mt = meter_event(
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
        return (rating.amount if amount is None else amount), mt.quantity, mt
    if amount is not None:
        return amount, counted, None
    raise InvalidInput("this hold has no meter: settle it with an amount", code="invalid_settle")


def expire_hold_command(ctx: LedgerContext, hold_id: str, customer_id: str) -> Command[int]:
    """The sweeper's release of a hold past ``expires_at`` (1 if it did, 0 if it was resolved)."""

    def fn(s: Tx) -> int:
        now = ctx.clock.now()
        h = repo.get_hold(s, hold_id)
        if h is None or h.status != HoldStatus.OPEN or h.expires_at > now:
            return 0
        w = repo.try_lock_wallet(s, h.wallet_id)  # busy (another worker): next run
        h, held = repo.hold_and_draw(s, hold_id)  # re-read under the wallet lock
        if w is None or h is None or held is None or h.status != HoldStatus.OPEN:
            return 0
        st = ctx.state(s, w, grant_ids=tuple(g for g, _ in held.parts))
        op_id = new_id("rop")
        meta: GrantMeta = {}
        give_back_hold(st, meta, held, h.amount, now, operation_id=op_id, hold_id=h.id)
        result = HoldResolution(h.id, HoldStatus.EXPIRED, h.amount, None, 0, op_id, ctx.unit).to_json()
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=h.customer_id,
            kind=OpKind.RELEASE,
            idempotency_key=f"hold:{h.id}",
            amount=0,
            ref_id=h.id,
            result=result,
            created_at=now,
        )
        repo.resolve_hold(
            s,
            h.id,
            status=HoldStatus.EXPIRED,
            resolution_operation_id=op_id,
            result=result,
            resolution_hash="expired",
            resolved_at=now,
        )
        keyspend.count(s, h.api_key_id, keyspend.day_of(h.created_at), held=-h.amount)
        repo.persist(s, st, now, grant_meta=meta)
        return 1

    return Command(fn, customer_id)
