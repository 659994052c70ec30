"""Refunding a charge (a usage event or a settled hold), whole or in part.

What a charge took, grant by grant, comes from the journal (``repository.draw_of``); what its
earlier refunds accounted for, from their amounts (``rules.refund_left``); where the credits
go, from :func:`~tollkeep.ledger.rules.give_back_refund`. The stored result is only the answer
(the replay cache).
"""

from __future__ import annotations

from typing import Any

from tollkeep.audit import record
from tollkeep.kit.actor import Actor
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict, NotFound
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import check_replay
from tollkeep.ledger.kinds import CHARGE_KINDS, OpKind
from tollkeep.ledger.requests import RefundRequest
from tollkeep.ledger.results import RefundResult, answer, replayed
from tollkeep.ledger.rules import GrantMeta, give_back_refund, refund_left

__all__ = ["refund_command"]


_AMOUNTS = ("amount", "to_original_grants", "balance")


def refund_command(
    ctx: LedgerContext, req: RefundRequest, *, key: str | None, actor: Actor | None = None
) -> Command[dict[str, Any]]:
    """Refund once per (wallet, idempotency key). ``key``: the charge's customer. ``actor``: who
    asked (the refund is audited in the same transaction, with the balance and the charge's
    refundable amount before and after; a replay changes nothing and is not)."""
    req = req.validate()
    h = req.fingerprint()

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        op = repo.get_operation(s, req.operation_id)
        if op is None or op.kind not in CHARGE_KINDS:
            raise NotFound(f"charge {req.operation_id!r} not found", code="charge_not_found")
        w = repo.lock_wallet(s, op.wallet_id)
        assert w is not None
        prior = repo.find_operation(s, w.id, OpKind.REFUND, req.idempotency_key)
        if prior is not None:
            check_replay(prior.request_hash, h, req.idempotency_key)
            return ctx.shown(replayed(prior.result, balance=ctx.wallet_balance(s, w, now)), *_AMOUNTS)
        op = repo.get_operation(s, req.operation_id)  # re-read under the wallet lock
        assert op is not None
        refundable = op.amount - op.refunded
        want = refundable if req.amount is None else req.amount
        if want <= 0 or want > refundable:
            raise Conflict(
                f"can refund at most {refundable} of this charge",
                code="refund_exceeds_charge",
                details={"refundable": refundable},
            )
        hold_id = op.ref_id if op.ref_id and op.ref_id.startswith("hld_") else None
        drawn = repo.drawn_by(s, hold_id=hold_id) if hold_id else repo.drawn_by(s, operation_id=op.id)
        left = refund_left(drawn, repo.earlier_refunds(s, op.id))
        st = ctx.state(s, w, grant_ids=tuple(g for g, _ in left.parts))
        balance_before = ctx.balance(s, st, now) if actor is not None else None
        ref_id = new_id("ref")
        meta: GrantMeta = {}
        back = give_back_refund(st, meta, left, want, now, operation_id=ref_id, note=req.reason)
        result = RefundResult(
            ref_id,
            op.id,
            want,
            want - back.unplaced,
            None if back.new_grant is None else back.new_grant.id,
            req.reason,
            ctx.unit,
        ).to_json()
        repo.insert_operation(
            s,
            id=ref_id,
            wallet_id=w.id,
            customer_id=op.customer_id,
            kind=OpKind.REFUND,
            idempotency_key=req.idempotency_key,
            request_hash=h,
            amount=want,
            ref_id=op.id,
            properties={"reason": req.reason} if req.reason else None,
            result=result,
            created_at=now,
        )
        repo.add_refunded(s, op.id, want)
        repo.persist(s, st, now, grant_meta=meta)
        out = answer(result, ctx.balance(s, st, now))
        if actor is not None:
            record(
                s,
                actor,
                "refund.create",
                ("customer", op.customer_id),
                before={"balance": balance_before, "charge_id": op.id, "refundable": refundable},
                after={
                    **result,
                    "idempotency_key": req.idempotency_key,
                    "refundable": refundable - want,
                    "balance": out["balance"],
                },
                at=now,
            )
        return ctx.shown(out, *_AMOUNTS)

    return Command(fn, key)
