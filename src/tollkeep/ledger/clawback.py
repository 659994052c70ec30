"""Taking credits back: a payment was refunded, so the credits it bought leave the wallet.

Once per (wallet, idempotency key). What is taken comes first from the grant that payment
bought, then from the wallet's other live credits in spend order, then from the overdraft
headroom; never past the overdraft limit and never from credits an open hold reserved
(:meth:`~tollkeep.ledger.domain.WalletState.claw_back`). Whatever could not be taken is the
``shortfall``: recorded on the operation and in the answer, not hidden.
"""

from __future__ import annotations

from typing import Any

from tollkeep.kit.db import Tx
from tollkeep.kit.errors import InvalidInput
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import check_replay, request_hash
from tollkeep.ledger.kinds import OpKind
from tollkeep.ledger.requests import check_amount, check_idempotency_key

__all__ = ["clawback_command"]


def clawback_command(
    ctx: LedgerContext,
    customer_id: str,
    amount: int,
    *,
    idempotency_key: str,
    first_grant: str | None = None,
    reason: str | None = None,
) -> Command[dict[str, Any]]:
    check_amount(amount)
    check_idempotency_key(idempotency_key)
    if reason is not None and len(reason) > 500:
        raise InvalidInput("reason is longer than 500 characters", code="invalid_reason")
    h = request_hash({"customer_id": customer_id, "amount": amount, "first_grant": first_grant})

    def fn(s: Tx) -> dict[str, Any]:
        now = ctx.clock.now()
        w, prior = ctx.wallet_and_prior(s, customer_id, OpKind.CLAWBACK, idempotency_key)
        if prior is not None:
            check_replay(prior.request_hash, h, idempotency_key)
            return {**prior.result, "replayed": True, "balance": ctx.wallet_balance(s, w, now)}
        st = repo.load_state(s, w, grant_ids=(first_grant,) if first_grant else ())
        op_id = new_id("op")
        taken = st.claw_back(amount, now, operation_id=op_id, first=first_grant)
        result = {
            "operation_id": op_id,
            "customer_id": customer_id,
            "requested": amount,
            "taken": taken,
            "shortfall": amount - taken,
        }
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=customer_id,
            kind=OpKind.CLAWBACK,
            idempotency_key=idempotency_key,
            request_hash=h,
            amount=taken,
            properties={"requested": amount, "shortfall": amount - taken, "reason": reason},
            result=result,
            created_at=now,
        )
        repo.persist(s, st, now)
        return {**result, "replayed": False, "balance": ctx.balance(s, st, now)}

    return Command(fn, customer_id)
