"""``tollkeep ledger verify``: recompute every grant, wallet, hold and charge from the journal.

Beyond "the journal sums to the balances" it checks that each operation's entries sum to the
amount it recorded, that every charge's attribution (what it took, grant by grant, with the
overdraft) adds up to the charge, that refunds put back into a grant (or the overdraft) no more
than the charge took from it, that no credit flows into a grant after it ended (expired or
closed) unless it ends again in the same operation, that closed grants hold nothing, that each
wallet's stored credit sum is what its grants hold and what the journal says (and that no grant
with credits expires before the wallet's ``live_until``), that each grant's
``has_credits`` flag (what a charge reads grants by) says whether it holds credits, and, given
the catalogs, that tokens events recorded ``input + output`` tokens as their quantity; and that
each API key's per-day spend (``key_spend``, what its spend limits read) is what its charges and
holds say."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, func, or_, select

from tollkeep.catalog import Catalog, parse_catalog
from tollkeep.catalog.models import CatalogVersion
from tollkeep.keys.models import ApiKey
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import TollkeepError
from tollkeep.ledger.keyspend import day_of
from tollkeep.ledger.models import Grant, Hold, JournalEntry, KeySpend, Operation, Wallet
from tollkeep.ledger.repository import draw_of
from tollkeep.pricing import rate

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


def verify_ledger(
    s: Tx,
    *,
    progress: Callable[[str], None] | None = None,
    catalogs: Callable[[str], Catalog | None] | None = None,
) -> VerifyReport:
    """``catalogs`` finds a catalog by version (the ones recorded in ``catalog_versions`` are
    found without it); with neither, quantities are not re-rated."""
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
    for g in s.execute(select(G.c.id, G.c.amount, G.c.remaining, G.c.closed_at, G.c.has_credits)):
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
        if g.closed_at is not None and g.remaining != 0:
            rep.problems.append(f"grant {g.id}: closed but holds {g.remaining}")
        if bool(g.has_credits) != (g.remaining > 0):
            # a charge reads only the grants flagged: one flagged wrong is never spent, or read
            rep.problems.append(
                f"grant {g.id}: has_credits {bool(g.has_credits)} but remaining {g.remaining}"
            )
    for gid in by_grant:
        rep.problems.append(f"journal names grant {gid} which does not exist")

    say("wallets")
    od = dict(
        s.execute(
            select(J.c.wallet_id, func.sum(J.c.delta)).where(J.c.grant_id.is_(None)).group_by(J.c.wallet_id)
        ).all()
    )
    # the stored credit sum: the grants' remaining, and the journal's grant entries, per wallet
    held_by = dict(s.execute(select(G.c.wallet_id, func.sum(G.c.remaining)).group_by(G.c.wallet_id)).all())
    journal_by = dict(
        s.execute(
            select(J.c.wallet_id, func.sum(J.c.delta))
            .where(J.c.grant_id.is_not(None))
            .group_by(J.c.wallet_id)
        ).all()
    )
    # live_until: no grant with credits expires before it (it is the first expiry among them, or
    # earlier)
    not_live_by: dict[str, int] = dict(
        s.execute(
            select(W.c.id, func.count())
            .join(G, G.c.wallet_id == W.c.id)
            .where(
                W.c.live_until.is_not(None),
                G.c.remaining > 0,
                G.c.expires_at < W.c.live_until,
            )
            .group_by(W.c.id)
        ).all()
    )
    for w in s.execute(select(W.c.id, W.c.overdraft_used, W.c.overdraft_limit, W.c.credits, W.c.live_until)):
        rep.wallets += 1
        in_grants = int(held_by.get(w.id, 0) or 0)
        in_journal = int(journal_by.get(w.id, 0) or 0)
        if w.credits != in_grants or w.credits != in_journal:
            rep.problems.append(
                f"wallet {w.id}: credits {w.credits} but its grants hold {in_grants} "
                f"and the journal sums to {in_journal}"
            )
        if not_live_by.get(w.id):
            rep.problems.append(
                f"wallet {w.id}: live_until {w.live_until} but {not_live_by[w.id]} grant(s) with credits "
                "expire before it"
            )
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
    hold_amount = dict(s.execute(select(H.c.id, H.c.amount)).all())
    # what each charge and each hold took, grant by grant, folded as the refund path folds it
    rows_by: dict[str, list[tuple[str | None, int, str]]] = defaultdict(list)
    # credits a hold gave back to a grant that had ended, ended again in the same operation
    reended: dict[str, int] = defaultdict(int)
    for op_id, hold_id, gid, delta, kind in s.execute(
        select(J.c.operation_id, J.c.hold_id, J.c.grant_id, J.c.delta, J.c.kind).order_by(J.c.id)
    ):
        rows_by[hold_id or op_id].append((gid, int(delta), kind))
        if kind in ("close", "expire"):
            reended[op_id] += int(delta)
    refunds: dict[str, int] = defaultdict(int)
    returned: dict[str, dict[str | None, int]] = defaultdict(lambda: defaultdict(int))
    rated: dict[str, Catalog | None] = {}
    for o in s.execute(
        select(
            O.c.id,
            O.c.kind,
            O.c.amount,
            O.c.refunded,
            O.c.ref_id,
            O.c.meter,
            O.c.quantity,
            O.c.properties,
            O.c.catalog_version,
            O.c.result,
        )
    ):
        rep.operations += 1
        net = int(by_op.get(o.id, 0) or 0)
        expected = _expected_net(o, hold_amount, reended[o.id])
        if expected is not None and net != expected:
            rep.problems.append(f"{o.kind} {o.id}: records {o.amount} but its entries sum to {net}")
        if o.kind == "settle" or (o.kind == "usage" and not (o.ref_id or "").startswith("hld_")):
            taken = draw_of(rows_by.get(o.ref_id if o.kind == "settle" else o.id, ())).total
            if taken != o.amount:
                rep.problems.append(f"charge {o.id}: amount {o.amount} but it took {taken}")
        if o.kind == "refund" and o.ref_id:
            refunds[o.ref_id] += o.amount
            # what the refund's own entries put back, grant by grant (and to the overdraft)
            for gid, delta, kind in rows_by.get(o.id, ()):
                if kind == "refund":
                    returned[o.ref_id][gid] += delta
            att = (o.result or {}).get("attribution")  # recorded by refunds of older versions
            if att is not None:
                total = sum(int(a) for _, a in att.get("parts", [])) + int(att.get("overdraft", 0))
                if total != o.amount:
                    rep.problems.append(f"refund {o.id}: amount {o.amount} but attributed {total}")
        if o.kind in ("usage", "settle") and not 0 <= o.refunded <= o.amount:
            rep.problems.append(f"charge {o.id}: refunded {o.refunded} outside 0..{o.amount}")
        if o.kind in ("usage", "hold", "settle") and o.meter and o.quantity is not None and o.catalog_version:
            problem = _check_quantity(s, o, rated, catalogs)
            if problem:
                rep.problems.append(problem)
    for charge_id, total in refunds.items():
        row = s.execute(select(O.c.refunded, O.c.kind, O.c.ref_id).where(O.c.id == charge_id)).first()
        if row is None or row.refunded != total:
            rep.problems.append(
                f"charge {charge_id}: refunds sum to {total}, charge says {row.refunded if row else None}"
            )
            continue
        took = draw_of(rows_by.get(row.ref_id if row.kind == "settle" else charge_id, ()))
        parts: dict[str | None, int] = {**dict(took.parts), None: took.overdraft}
        for gid, back in returned[charge_id].items():
            if back > parts.get(gid, 0):
                rep.problems.append(
                    f"charge {charge_id}: refunds return {back} to {gid or 'the overdraft'}, "
                    f"which it took {parts.get(gid, 0)} from"
                )

    say("ended grants")
    # credit may flow into a grant after its end only to end again in the same operation
    ended = (
        select(J.c.operation_id, J.c.grant_id, func.sum(J.c.delta).label("net"))
        .join(G, G.c.id == J.c.grant_id)
        .where(
            J.c.operation_id != G.c.operation_id,  # the grant's own creation may share the instant
            or_(
                and_(G.c.closed_at.is_not(None), J.c.created_at >= G.c.closed_at),
                and_(G.c.expires_at.is_not(None), J.c.created_at >= G.c.expires_at),
            ),
        )
        .group_by(J.c.operation_id, J.c.grant_id)
    )
    for r in s.execute(ended):
        if int(r.net or 0) > 0:
            rep.problems.append(
                f"grant {r.grant_id}: operation {r.operation_id} put {r.net} into it after it ended"
            )

    say("key spend")
    _verify_key_spend(s, rep)

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


def _verify_key_spend(s: Tx, rep: VerifyReport) -> None:
    """Each key's per-day ``key_spend`` row is what its charges and settled holds spent and its
    open holds reserve (a hold on the day it was opened), recomputed from operations and holds."""
    O, H, KS = (m.__table__ for m in (Operation, Hold, KeySpend))  # noqa: E741
    want: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    charges = select(O.c.api_key_id, O.c.amount, O.c.created_at).where(
        O.c.kind == "usage",
        O.c.api_key_id.in_(select(ApiKey.__table__.c.id)),  # buyer keys (not server keys)
        or_(O.c.ref_id.is_(None), ~O.c.ref_id.startswith("hld_")),
    )
    for key_id, amount, created in s.execute(charges):
        want[(key_id, day_of(created))][0] += int(amount)
    holds = select(H.c.api_key_id, H.c.status, H.c.amount, H.c.settled_amount, H.c.created_at).where(
        H.c.api_key_id.is_not(None)
    )
    for key_id, status, amount, settled, created in s.execute(holds):
        row = want[(key_id, day_of(created))]
        if status == "open":
            row[1] += int(amount)
        elif status == "settled":
            row[0] += int(settled or 0)
    for key_id, day, spent, held in s.execute(select(KS.c.api_key_id, KS.c.day, KS.c.spent, KS.c.held)):
        spent_w, held_w = want.pop((key_id, day), (0, 0))
        if (spent, held) != (spent_w, held_w):
            rep.problems.append(
                f"key {key_id} on {day}: key_spend says spent {spent}, held {held}; "
                f"the charges and holds say spent {spent_w}, held {held_w}"
            )
    for (key_id, day), (spent_w, held_w) in want.items():
        if spent_w or held_w:
            rep.problems.append(
                f"key {key_id} on {day}: no key_spend row, but the charges and holds say "
                f"spent {spent_w}, held {held_w}"
            )


def _expected_net(o: Any, hold_amount: dict[str, int], reended: int) -> int | None:
    """What an operation's journal entries must sum to, from what it recorded (None: no rule)."""
    if o.kind == "usage":
        return None if (o.ref_id or "").startswith("hld_") else -int(o.amount)
    if o.kind in ("grant", "allowance", "refund"):
        return int(o.amount)
    if o.kind in ("hold", "expire", "clawback"):
        return -int(o.amount)
    if o.kind in ("settle", "release"):
        held = hold_amount.get(o.ref_id or "")
        return None if held is None else held - int(o.amount) + reended
    if o.kind == "plan_change" and o.properties and "closed" in o.properties:
        return int(o.amount) - int(o.properties["closed"])
    return None


def _check_quantity(
    s: Tx, o: Any, rated: dict[str, Catalog | None], catalogs: Callable[[str], Catalog | None] | None
) -> str | None:
    """A tokens event must record input + output tokens, as the catalog of its time rates them."""
    version = o.catalog_version
    if version not in rated:
        cat = catalogs(version) if catalogs else None
        if cat is None:
            text = s.execute(
                select(CatalogVersion.text).where(CatalogVersion.version == version)
            ).scalar_one_or_none()
            if text is not None:
                try:
                    cat = parse_catalog(text)
                except TollkeepError:
                    cat = None
        rated[version] = cat
    cat = rated[version]
    m = cat.meters.get(o.meter) if cat is not None else None
    if m is None or m.price is None or m.price.model != "tokens":
        return None
    try:
        tokens = rate(cat, o.meter, Decimal(1), properties=o.properties or {}).quantity  # type: ignore[arg-type]
    except TollkeepError:
        return f"{o.kind} {o.id}: its properties no longer rate on meter {o.meter!r}"
    if Decimal(o.quantity) != tokens:
        return f"{o.kind} {o.id}: quantity {o.quantity} but input + output tokens are {tokens}"
    return None
