"""All of the ledger's SQL. Core statements on the ORM tables (the hot path avoids ORM loading)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, or_, select, update

from tollkeep.customers.models import Customer
from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement
from tollkeep.ledger.domain import Draw, GrantState, WalletState
from tollkeep.ledger.models import Grant, Hold, JournalEntry, Operation, UniqueValue, UsageCounter, Wallet

W = table_of(Wallet)
C = table_of(Customer)
G = table_of(Grant)
J = table_of(JournalEntry)
O = table_of(Operation)  # noqa: E741
H = table_of(Hold)
UC = table_of(UsageCounter)
UV = table_of(UniqueValue)


_WALLET_COLS = (
    W.c.id,
    W.c.customer_id,
    W.c.overdraft_limit,
    W.c.overdraft_used,
    W.c.allowance_until,
    W.c.carryover_done,
    C.c.plan,
    C.c.status,
    C.c.anonymous,
)
# The hot path's statements are built once and run as RawStatements: compiled by SQLAlchemy
# for the dialect, with its type processors, executed on the driver cursor (see kit/rawsql.py).
_LOCK_WALLET = RawStatement(
    select(*_WALLET_COLS)
    .join(C, C.c.id == W.c.customer_id)
    .where(W.c.id == bindparam("wid"))
    .with_for_update(of=W)
)
# background jobs skip a wallet another transaction holds (FOR UPDATE SKIP LOCKED on
# PostgreSQL; SQLite has one writer and no locking clause): it is done on the next run
_TRY_LOCK_WALLET = RawStatement(
    select(*_WALLET_COLS)
    .join(C, C.c.id == W.c.customer_id)
    .where(W.c.id == bindparam("wid"))
    .with_for_update(of=W, skip_locked=True)
)
_LOCK_WALLET_OF_CUSTOMER = RawStatement(
    select(*_WALLET_COLS)
    .join(C, C.c.id == W.c.customer_id)
    .where(W.c.customer_id == bindparam("cid"))
    .with_for_update(of=W)
)
_GRANT_COLS = (
    G.c.id,
    G.c.amount,
    G.c.remaining,
    G.c.source,
    G.c.priority,
    G.c.effective_at,
    G.c.expires_at,
    G.c.created_at,
    G.c.meter,
    G.c.closed_at,
)
_LIVE_GRANTS = RawStatement(select(*_GRANT_COLS).where(G.c.wallet_id == bindparam("wid"), G.c.remaining > 0))
_SOME_GRANTS = select(*_GRANT_COLS).where(
    G.c.wallet_id == bindparam("wid"), or_(G.c.remaining > 0, G.c.id.in_(bindparam("ids", expanding=True)))
)
_FIND_OP = RawStatement(
    select(O).where(
        O.c.wallet_id == bindparam("wid"),
        O.c.kind == bindparam("kind"),
        O.c.idempotency_key == bindparam("key"),
    )
)


def _insert_all(table: Any, *, skip: tuple[str, ...] = ()) -> RawStatement:
    """INSERT naming every column (callers pass them all; missing ones are NULL)."""
    return RawStatement(insert(table).values({c.key: bindparam(c.key) for c in table.c if c.key not in skip}))


_INSERT_OP = _insert_all(O)
_INSERT_GRANT = _insert_all(G)
_INSERT_JOURNAL = _insert_all(J, skip=("id",))
_SET_REMAINING = RawStatement(
    update(G)
    .where(G.c.id == bindparam("gid"))
    .values(remaining=bindparam("rem"), closed_at=bindparam("closed"))
)
_SET_OVERDRAFT = RawStatement(
    update(W)
    .where(W.c.id == bindparam("wid"))
    .values(overdraft_used=bindparam("used"), updated_at=bindparam("now"))
)


def open_wallet(s: Tx, customer_id: str, now: datetime) -> str:
    """Create a new customer's wallet (empty, no overdraft); returns its id."""
    wallet_id = new_id("wal")
    s.execute(
        insert(W).values(
            id=wallet_id,
            customer_id=customer_id,
            overdraft_limit=0,
            overdraft_used=0,
            carryover_done=False,
            created_at=now,
            updated_at=now,
        )
    )
    return wallet_id


def lock_wallet(s: Tx, wallet_id: str) -> Any:
    """The wallet row with its customer's plan and status, locked for the transaction on PostgreSQL
    (SQLite already serializes writers)."""
    return _LOCK_WALLET.first(s, {"wid": wallet_id})


def try_lock_wallet(s: Tx, wallet_id: str) -> Any:
    """Like :func:`lock_wallet`, for background jobs: None when the wallet does not exist or, on
    PostgreSQL, another transaction holds its lock (``SKIP LOCKED``: a second worker, or a charge
    in flight). Several workers sweeping one database so never do one wallet's work twice, and
    never wait on each other."""
    return _TRY_LOCK_WALLET.first(s, {"wid": wallet_id})


def lock_wallet_of_customer(s: Tx, customer_id: str) -> Any:
    return _LOCK_WALLET_OF_CUSTOMER.first(s, {"cid": customer_id})


def wallet_id_for_customer(s: Tx, customer_id: str) -> str | None:
    return s.execute(select(W.c.id).where(W.c.customer_id == customer_id)).scalar()


def load_state(s: Tx, wallet: Any, *, grant_ids: Iterable[str] = ()) -> WalletState:
    ids = list(grant_ids)
    rows: Sequence[Any]
    if ids:
        rows = s.connection().execute(_SOME_GRANTS, {"wid": wallet.id, "ids": ids}).all()
    else:
        rows = _LIVE_GRANTS.rows(s, {"wid": wallet.id})
    st = WalletState(wallet.id, wallet.overdraft_limit, wallet.overdraft_used)
    for r in rows:
        st.grants[r.id] = GrantState(
            r.id,
            r.amount,
            r.remaining,
            r.source,
            r.priority,
            r.effective_at,
            r.expires_at,
            r.created_at,
            r.meter,
            r.closed_at,
        )
    return st


def persist(
    s: Tx,
    st: WalletState,
    now: datetime,
    *,
    grant_meta: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write back what the domain changed: new grants, remaining of touched grants, the journal."""
    meta = grant_meta or {}
    new = set(st.new_grants)
    if new:
        _INSERT_GRANT.execute(
            s,
            [
                {
                    "id": g.id,
                    "wallet_id": st.wallet_id,
                    "amount": g.amount,
                    "remaining": g.remaining,
                    "source": g.source,
                    "priority": g.priority,
                    "meter": g.meter,
                    "effective_at": g.effective_at,
                    "expires_at": g.expires_at,
                    "closed_at": g.closed_at,
                    "created_at": g.created_at,
                    "operation_id": meta.get(g.id, {}).get("operation_id", ""),
                    "note": meta.get(g.id, {}).get("note"),
                }
                for gid in st.new_grants
                for g in [st.grants[gid]]
            ],
        )
    touched = [
        {"gid": gid, "rem": st.grants[gid].remaining, "closed": st.grants[gid].closed_at}
        for gid in st.dirty - new
    ]
    if touched:
        _SET_REMAINING.execute(s, touched)
    if st.entries:
        _INSERT_JOURNAL.execute(
            s,
            [
                {
                    "wallet_id": st.wallet_id,
                    "grant_id": e.grant_id,
                    "operation_id": e.operation_id,
                    "hold_id": e.hold_id,
                    "kind": str(e.kind),
                    "delta": e.delta,
                    "created_at": now,
                }
                for e in st.entries
            ],
        )
    if st.overdraft_dirty:
        _SET_OVERDRAFT.execute(s, {"wid": st.wallet_id, "used": st.overdraft_used, "now": now})
    st.entries.clear()
    st.new_grants.clear()
    st.dirty.clear()
    st.overdraft_dirty = False


# Kinds and statuses are StrEnums (ledger/kinds.py); the driver binds an exact str about 1 µs
# faster than a str subclass, so the hot path's statements get ``str(kind)``.
def find_operation(s: Tx, wallet_id: str, kind: str, key: str) -> Any:
    return _FIND_OP.first(s, {"wid": wallet_id, "kind": str(kind), "key": key})


def get_operation(s: Tx, op_id: str) -> Row[Any] | None:
    return s.execute(select(O).where(O.c.id == op_id)).first()


def insert_operation(s: Tx, **values: Any) -> None:
    values.setdefault("refunded", 0)
    values["kind"] = str(values["kind"])
    _INSERT_OP.execute(s, values)


def drawn_by(s: Tx, *, operation_id: str | None = None, hold_id: str | None = None) -> Draw:
    """What an operation (or a hold, across hold/release/settle) took, per grant, from the journal."""
    cond = J.c.operation_id == operation_id if hold_id is None else J.c.hold_id == hold_id
    rows = s.execute(select(J.c.grant_id, J.c.delta, J.c.kind).where(cond).order_by(J.c.id)).all()
    return draw_of(rows)


def draw_of(rows: Iterable[tuple[str | None, int, str]]) -> Draw:
    """Fold journal rows ``(grant_id, delta, kind)`` of one charge or hold into what it took.

    A hold's part on the overdraft that was repaid before the hold gave it back cannot return
    to the overdraft: it comes back as a new grant, whose ``grant`` entry is tied to the hold.
    Those credits are the overdraft part returned, so they count against it (not as a grant
    the hold drew from): what remains is what the charge really took."""
    totals: dict[str, int] = {}
    od = 0
    for gid, delta, kind in rows:
        if gid is None or kind == "grant":
            od -= delta
        else:
            totals[gid] = totals.get(gid, 0) - delta
    return Draw(tuple((g, a) for g, a in totals.items() if a > 0), max(od, 0))


def earlier_refunds(s: Tx, charge_id: str) -> list[tuple[int, Draw | None]]:
    """A charge's refunds, oldest first: each one's amount, and the attribution it recorded in
    its result (refunds recorded before the result held only the response; None since: the
    amount says which parts it accounts for, see ``rules.refund_left``)."""
    rows = s.execute(
        select(O.c.amount, O.c.result)
        .where(O.c.kind == "refund", O.c.ref_id == charge_id)
        .order_by(O.c.created_at, O.c.id)
    ).all()
    return [
        (
            int(r.amount),
            Draw.from_json(r.result["attribution"]) if r.result and "attribution" in r.result else None,
        )
        for r in rows
    ]


def add_refunded(s: Tx, op_id: str, amount: int) -> None:
    s.execute(update(O).where(O.c.id == op_id).values(refunded=O.c.refunded + amount))


def get_counters(
    s: Tx, wallet_id: str, meter: str, periods: Sequence[str]
) -> dict[str, tuple[Decimal, Decimal]]:
    rows = s.execute(
        select(UC.c.period, UC.c.value, UC.c.allowance_used).where(
            UC.c.wallet_id == wallet_id, UC.c.meter == meter, UC.c.period.in_(list(periods))
        )
    ).all()
    return {r.period: (r.value, r.allowance_used) for r in rows}


def put_counter(
    s: Tx,
    wallet_id: str,
    meter: str,
    period: str,
    value: Decimal,
    allowance_used: Decimal,
    *,
    exists: bool,
) -> None:
    if exists:
        s.execute(
            update(UC)
            .where(UC.c.wallet_id == wallet_id, UC.c.meter == meter, UC.c.period == period)
            .values(value=value, allowance_used=allowance_used)
        )
    else:
        s.execute(
            insert(UC).values(
                wallet_id=wallet_id, meter=meter, period=period, value=value, allowance_used=allowance_used
            )
        )


def unique_seen(s: Tx, wallet_id: str, meter: str, period: str, value: str) -> bool:
    return (
        s.execute(
            select(UV.c.value).where(
                UV.c.wallet_id == wallet_id, UV.c.meter == meter, UV.c.period == period, UV.c.value == value
            )
        ).first()
        is not None
    )


def add_unique(s: Tx, wallet_id: str, meter: str, period: str, value: str) -> None:
    s.execute(insert(UV).values(wallet_id=wallet_id, meter=meter, period=period, value=value))


def get_hold(s: Tx, hold_id: str) -> Row[Any] | None:
    return s.execute(select(H).where(H.c.id == hold_id)).first()


def find_hold(s: Tx, operation_id: str) -> Row[Any] | None:
    return s.execute(select(H).where(H.c.operation_id == operation_id)).first()


def insert_hold(s: Tx, **values: Any) -> None:
    s.execute(insert(H).values(**values))


def update_hold(s: Tx, hold_id: str, **values: Any) -> None:
    s.execute(update(H).where(H.c.id == hold_id).values(**values))


def set_wallet(s: Tx, wallet_id: str, **values: Any) -> None:
    s.execute(update(W).where(W.c.id == wallet_id).values(**values))


def expired_open_holds(s: Tx, now: datetime, limit: int) -> list[Any]:
    """(id, customer_id) of open holds past their expiry."""
    return list(
        s.execute(
            select(H.c.id, H.c.customer_id)
            .where(H.c.status == "open", H.c.expires_at <= now)
            .order_by(H.c.expires_at)
            .limit(limit)
        ).all()
    )


def wallets_with_expired_grants(s: Tx, now: datetime, limit: int) -> list[Any]:
    """(id, customer_id) of wallets holding expired grants with credits left."""
    expiring = (
        select(G.c.wallet_id)
        .where(G.c.remaining > 0, G.c.expires_at.is_not(None), G.c.expires_at <= now)
        .distinct()
        .subquery()
    )
    return list(
        s.execute(
            select(W.c.id, W.c.customer_id).join(expiring, expiring.c.wallet_id == W.c.id).limit(limit)
        ).all()
    )


def open_holds_total(s: Tx, wallet_id: str) -> int:
    return int(
        s.execute(
            select(func.coalesce(func.sum(H.c.amount), 0)).where(
                H.c.wallet_id == wallet_id, H.c.status == "open"
            )
        ).scalar_one()
    )


def get_hold_of_customer(s: Tx, customer_id: str, hold_id: str) -> Any:
    return s.execute(select(H).where(H.c.id == hold_id, H.c.customer_id == customer_id)).first()


def owner_of(s: Tx, what: str, ref: str) -> str | None:
    """The customer id of a hold (``what="hold"``) or an operation (``"charge"``)."""
    table = H if what == "hold" else O
    return s.execute(select(table.c.customer_id).where(table.c.id == ref)).scalar()


def open_hold_quantities(s: Tx, wallet_id: str, meter: str) -> list[Decimal]:
    """The estimated quantities open holds of a wallet have reserved on a meter."""
    rows = s.execute(
        select(H.c.quantity).where(H.c.wallet_id == wallet_id, H.c.meter == meter, H.c.status == "open")
    ).scalars()
    return [Decimal(q) for q in rows if q is not None]


def open_allowance_grant_ids(s: Tx, wallet_id: str, now: datetime) -> list[str]:
    """Plan allowance grants not yet ended, spent to 0 or not (a plan change closes them all, so
    credits a hold gives back later cannot revive them)."""
    return list(
        s.execute(
            select(G.c.id).where(
                G.c.wallet_id == wallet_id,
                G.c.source == "plan_allowance",
                G.c.closed_at.is_(None),
                or_(G.c.expires_at.is_(None), G.c.expires_at > now),
            )
        ).scalars()
    )
