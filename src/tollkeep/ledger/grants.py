"""Granting credit: the ledger's grant use case, and the grant calls every domain uses inside a
unit of work of its own.

The grant use case (``LedgerService.grant``), the plans domain's allowances and carry-overs,
refunds and hold give-backs all make their grants with :func:`~tollkeep.ledger.rules.new_grant`,
so a grant always gets its priority default, its journal entry and its metadata the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from tollkeep.audit import record
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import GrantState, WalletState, check_replay
from tollkeep.ledger.events import CreditsGranted
from tollkeep.ledger.kinds import OpKind
from tollkeep.ledger.requests import GrantRequest
from tollkeep.ledger.results import GrantResult, answer, replayed
from tollkeep.ledger.rules import GrantMeta, new_grant

__all__ = ["GrantMeta", "grant_command", "grant_once", "new_grant"]


_AMOUNTS = ("amount", "balance")


def grant_command(
    ctx: LedgerContext, req: GrantRequest, *, actor: Actor | None = None
) -> Command[dict[str, Any]]:
    """Grant credits, once per (wallet, idempotency key); emits ``CreditsGranted`` in the same
    transaction (a replay emits nothing). ``actor``: who asked (the grant is audited in the same
    transaction, with the balance before and after; a replay changes nothing and is not)."""
    req = req.validate()
    if req.meter is not None:
        ctx.catalog().meter(req.meter)  # credits scoped to a meter that does not exist: 422
    key = req.idempotency_key or new_id("auto")
    h = req.fingerprint()

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, prior = ctx.wallet_and_prior(s, req.customer_id, OpKind.GRANT, key)
        if prior is not None:
            check_replay(prior.request_hash, h, key)
            return ctx.shown(replayed(prior.result, balance=ctx.wallet_balance(s, w, now)), *_AMOUNTS)
        req.check_window(now)
        st = ctx.state(s, w)
        balance_before = ctx.balance(s, st, now) if actor is not None else None
        meta: GrantMeta = {}
        op_id = new_id("op")
        g = new_grant(
            st,
            meta,
            amount=req.amount,
            source=req.source,
            now=now,
            operation_id=op_id,
            priority=req.priority,
            effective_at=req.effective_at,
            expires_at=req.expires_at,
            meter=req.meter,
            note=req.note,
        )
        result = GrantResult(
            g.id,
            op_id,
            req.customer_id,
            req.amount,
            req.source,
            g.priority,
            req.meter,
            g.effective_at,
            req.expires_at,
            ctx.unit,
        ).to_json()
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=req.customer_id,
            kind=OpKind.GRANT,
            idempotency_key=key,
            request_hash=h,
            amount=req.amount,
            meter=req.meter,
            properties={"note": req.note} if req.note else None,
            result=result,
            created_at=now,
        )
        repo.persist(s, st, now, grant_meta=meta)
        ctx.events.emit(
            s,
            CreditsGranted(
                req.customer_id, g.id, op_id, req.amount, str(req.source), ctx.unit, key, iso(req.expires_at)
            ),
        )
        out = answer(result, ctx.balance(s, st, now))
        if actor is not None:
            record(
                s,
                actor,
                "grant.create",
                ("customer", req.customer_id),
                before={"balance": balance_before},
                after={**result, "idempotency_key": key, "note": req.note, "balance": out["balance"]},
                at=now,
            )
        return ctx.shown(out, *_AMOUNTS)

    return Command(fn, req.customer_id)


def grant_once(
    s: Tx,
    wallet: Any,
    st: WalletState,
    meta: GrantMeta,
    *,
    kind: str,
    key: str,
    amount: int,
    source: str,
    now: datetime,
    catalog_version: str | None = None,
    priority: int | None = None,
    effective_at: datetime | None = None,
    expires_at: datetime | None = None,
    note: str | None = None,
) -> GrantState | None:
    """Grant ``amount`` once per (wallet, ``kind``, ``key``): an operation of that kind and key is
    recorded with the grant; if one exists already, nothing is granted and None is returned.
    The caller persists ``st`` (``repository.persist``) in the same unit of work."""
    if repo.find_operation(s, wallet.id, kind, key) is not None:
        return None
    op_id = new_id("op")
    repo.insert_operation(
        s,
        id=op_id,
        wallet_id=wallet.id,
        customer_id=wallet.customer_id,
        kind=kind,
        idempotency_key=key,
        amount=amount,
        catalog_version=catalog_version,
        created_at=now,
    )
    return new_grant(
        st,
        meta,
        amount=amount,
        source=source,
        now=now,
        operation_id=op_id,
        priority=priority,
        effective_at=effective_at,
        expires_at=expires_at,
        note=note,
    )
