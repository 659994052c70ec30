"""``tollkeep ledger verify``: recompute every grant, wallet, hold and charge from the journal."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from tollkeep.models import Grant, Hold, JournalEntry, Operation, Wallet

__all__ = ["VerifyReport", "verify_ledger"]


@dataclass
class VerifyReport:
    grants: int = 0
    wallets: int = 0
    holds: int = 0
    operations: int = 0
    entries: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "grants": self.grants,
            "wallets": self.wallets,
            "holds": self.holds,
            "operations": self.operations,
            "entries": self.entries,
            "problems": self.problems,
        }


def verify_ledger(s: Session, *, progress: Callable[[str], None] | None = None) -> VerifyReport:
    J, G, W, H, O = (m.__table__ for m in (JournalEntry, Grant, Wallet, Hold, Operation))  # noqa: E741
    rep = VerifyReport()
    say = progress or (lambda _msg: None)
    rep.entries = s.execute(select(func.count()).select_from(J)).scalar_one()

    say("grants")
    by_grant = dict(
        s.execute(
            select(J.c.grant_id, func.sum(J.c.delta)).where(J.c.grant_id.is_not(None)).group_by(J.c.grant_id)
        ).all()
    )
    granted = dict(
        s.execute(
            select(J.c.grant_id, func.sum(J.c.delta)).where(J.c.kind == "grant").group_by(J.c.grant_id)
        ).all()
    )
    for g in s.execute(select(G.c.id, G.c.amount, G.c.remaining)):
        rep.grants += 1
        total = int(by_grant.pop(g.id, 0) or 0)
        if total != g.remaining:
            rep.problems.append(f"grant {g.id}: remaining {g.remaining} but journal sums to {total}")
        if int(granted.get(g.id, 0) or 0) != g.amount:
            rep.problems.append(
                f"grant {g.id}: amount {g.amount} but grant entries sum to {granted.get(g.id, 0)}"
            )
        if not 0 <= g.remaining <= g.amount:
            rep.problems.append(f"grant {g.id}: remaining {g.remaining} outside 0..{g.amount}")
    for gid in by_grant:
        rep.problems.append(f"journal names grant {gid} which does not exist")

    say("wallets")
    od = dict(
        s.execute(
            select(J.c.wallet_id, func.sum(J.c.delta)).where(J.c.grant_id.is_(None)).group_by(J.c.wallet_id)
        ).all()
    )
    for w in s.execute(select(W.c.id, W.c.overdraft_used, W.c.overdraft_limit)):
        rep.wallets += 1
        owed = -int(od.get(w.id, 0) or 0)
        if owed != w.overdraft_used:
            rep.problems.append(f"wallet {w.id}: overdraft_used {w.overdraft_used} but journal says {owed}")
        if w.overdraft_used < 0:
            rep.problems.append(f"wallet {w.id}: negative overdraft position")

    say("holds")
    by_hold = dict(
        s.execute(
            select(J.c.hold_id, func.sum(J.c.delta)).where(J.c.hold_id.is_not(None)).group_by(J.c.hold_id)
        ).all()
    )
    for h in s.execute(select(H.c.id, H.c.status, H.c.amount, H.c.settled_amount)):
        rep.holds += 1
        taken = -int(by_hold.get(h.id, 0) or 0)
        expected = {"open": h.amount, "settled": h.settled_amount or 0}.get(h.status, 0)
        if taken != expected:
            rep.problems.append(f"hold {h.id} ({h.status}): journal takes {taken}, expected {expected}")

    say("operations")
    by_op = dict(s.execute(select(J.c.operation_id, func.sum(J.c.delta)).group_by(J.c.operation_id)).all())
    refunds: dict[str, int] = defaultdict(int)
    for o in s.execute(select(O.c.id, O.c.kind, O.c.amount, O.c.refunded, O.c.ref_id)):
        rep.operations += 1
        net = int(by_op.get(o.id, 0) or 0)
        if o.kind == "usage" and not (o.ref_id or "").startswith("hld_") and net != -o.amount:
            rep.problems.append(f"charge {o.id}: amount {o.amount} but journal takes {-net}")
        elif o.kind in ("grant", "allowance", "refund") and net != o.amount:
            rep.problems.append(f"{o.kind} {o.id}: amount {o.amount} but journal adds {net}")
        if o.kind == "refund" and o.ref_id:
            refunds[o.ref_id] += o.amount
        if o.kind in ("usage", "settle") and not 0 <= o.refunded <= o.amount:
            rep.problems.append(f"charge {o.id}: refunded {o.refunded} outside 0..{o.amount}")
    for charge_id, total in refunds.items():
        row = s.execute(select(O.c.refunded).where(O.c.id == charge_id)).first()
        if row is None or row.refunded != total:
            rep.problems.append(
                f"charge {charge_id}: refunds sum to {total}, charge says {row.refunded if row else None}"
            )

    dupes = s.execute(
        select(O.c.wallet_id, O.c.kind, O.c.idempotency_key)
        .where(O.c.idempotency_key.is_not(None))
        .group_by(O.c.wallet_id, O.c.kind, O.c.idempotency_key)
        .having(func.count() > 1)
    ).all()
    for d in dupes:
        rep.problems.append(
            f"idempotency key {d.idempotency_key!r} ({d.kind}) used twice in wallet {d.wallet_id}"
        )
    return rep
