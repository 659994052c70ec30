"""The sweeper: release holds past ``expires_at``, then zero grants past their end.

Safe to run anywhere, any time. The scans are reads (a read session: they never queue on the
writer); each wallet is then swept in its own unit of work, keyed by its customer like any other
command, so the sweeper never holds two wallets' locks at once (no deadlocks with charges) and
its work is batched with the customer's other commands. On PostgreSQL a wallet another
transaction holds is skipped (``SKIP LOCKED``), so several workers share the sweep without doing
a wallet twice or waiting; what is skipped is swept next run.
"""

from __future__ import annotations

from tollkeep.kit.db import Tx
from tollkeep.kit.executor import Command
from tollkeep.kit.ids import new_id
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.holds import expire_hold_command
from tollkeep.ledger.kinds import OpKind
from tollkeep.ledger.results import SweepResult

__all__ = ["expire_grants_command", "sweep"]


def sweep(ctx: LedgerContext, *, limit: int = 500) -> SweepResult:
    now = ctx.clock.now()
    with ctx.db.scope(write=False) as s:
        holds = repo.expired_open_holds(s, now, limit)
        wallets = repo.wallets_with_expired_grants(s, now, limit)
    submit = ctx.executor.submit
    released = [submit(expire_hold_command(ctx, h.id, h.customer_id)) for h in holds]
    expired = [submit(expire_grants_command(ctx, w.id, w.customer_id)) for w in wallets]
    return SweepResult(sum(f.result() for f in released), sum(f.result() for f in expired))


def expire_grants_command(ctx: LedgerContext, wallet_id: str, customer_id: str) -> Command[int]:
    """Zero the wallet's grants past their end (an ``expire`` operation); how many it zeroed."""

    def fn(s: Tx) -> int:
        now = ctx.clock.now()
        w = repo.try_lock_wallet(s, wallet_id)  # busy (another worker): next run
        if w is None:
            return 0
        st = repo.load_state(s, w)  # every grant: all that expired go at once
        op_id = new_id("exp")
        gone = st.expire(now, operation_id=op_id)
        if not gone:
            return 0
        repo.insert_operation(
            s,
            id=op_id,
            wallet_id=w.id,
            customer_id=w.customer_id,
            kind=OpKind.EXPIRE,
            idempotency_key=op_id,
            amount=sum(a for _, a in gone),
            properties={"grants": [g for g, _ in gone]},
            created_at=now,
        )
        repo.persist(s, st, now)
        return len(gone)

    return Command(fn, customer_id)
