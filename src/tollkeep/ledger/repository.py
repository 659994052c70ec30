"""All of the ledger's SQL. Core statements on the ORM tables (the hot path avoids ORM loading)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Row, and_, bindparam, func, insert, literal_column, or_, select, true, update

from tollkeep.customers.models import Customer
from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawRow, RawStatement, driver_cursor
from tollkeep.ledger.domain import Draw, GrantState, WalletState, spend_order
from tollkeep.ledger.models import (
    Grant,
    Hold,
    JournalEntry,
    KeySpend,
    Operation,
    UniqueValue,
    UsageCounter,
    Wallet,
)

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
    W.c.credits,
    W.c.live_until,
    W.c.allowance_until,
    W.c.carryover_done,
    W.c.period_anchor,
    W.c.period_since,
    W.c.period_until,
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
# The customer's wallet, locked, with the operation of ``kind`` under idempotency key ``key`` if
# there is one (``op_id``, ``op_hash``, ``op_result``): a command's first two reads in one
# statement. On PostgreSQL the operation is read in the statement's snapshot, which a wait for
# the lock can leave behind: a command that another process commits meanwhile under the same key
# is then caught by the unique index, and the executor runs this one again (a replay).
_LOCK_WALLET_AND_OP = RawStatement(
    select(
        *_WALLET_COLS, O.c.id.label("op_id"), O.c.request_hash.label("op_hash"), O.c.result.label("op_result")
    )
    .select_from(
        W.join(C, C.c.id == W.c.customer_id).outerjoin(
            O,
            and_(
                O.c.wallet_id == W.c.id,
                O.c.kind == bindparam("kind"),
                O.c.idempotency_key == bindparam("key"),
            ),
        )
    )
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
_FUNDED = G.c.has_credits == true()  # a literal: the index's second column, compared for equality
_SPEND_ORDER = (G.c.priority, G.c.expires_at.is_(None), G.c.expires_at, G.c.created_at, G.c.id)
# Every grant with credits (sweeper, balance view), and those named (``ids``) whatever they hold.
_GRANTS_WITH_CREDITS = RawStatement(select(*_GRANT_COLS).where(G.c.wallet_id == bindparam("wid"), _FUNDED))
_SOME_GRANTS = select(*_GRANT_COLS).where(
    G.c.wallet_id == bindparam("wid"), or_(_FUNDED, G.c.id.in_(bindparam("ids", expanding=True)))
)
_GRANTS_BY_ID = select(*_GRANT_COLS).where(
    G.c.wallet_id == bindparam("wid"), G.c.id.in_(bindparam("ids", expanding=True))
)
# A wallet with fewer grants with credits than this (one) is loaded whole by the first page, as
# before; a bigger one is loaded partial (a prefix), and later pages grow 4x. Small: every row
# read costs as much as a statement, and a partial state's balance needs no more statements
# (``live_until``).
FIRST_PAGE = 2
# A page of the grants with credits in spend order (index ix_grants_spend: the scan stops at
# the LIMIT, so a page costs the same in a wallet of 10,000 grants as of 1). The first page's
# LIMIT is written out: PostgreSQL then plans the prepared statement once (with a LIMIT given
# as a parameter it plans it again at every execution).
_SPEND_ROWS = select(*_GRANT_COLS).where(G.c.wallet_id == bindparam("wid"), _FUNDED).order_by(*_SPEND_ORDER)
_FIRST_SPEND_PAGE = RawStatement(_SPEND_ROWS.limit(literal_column(str(FIRST_PAGE))))
_SPEND_PAGE = RawStatement(_SPEND_ROWS.limit(bindparam("lim")).offset(bindparam("off")))
_NOW = bindparam("now", type_=G.c.expires_at.type)
# Credits of grants that are not live now: expired but not swept yet (ix_grants_expiry), not in
# effect yet (ix_grants_pending); and the first expiry of a grant with credits still to come. A
# few rows at most, whatever the number of live grants. A closed grant holds nothing once its
# operation is written (``ledger verify`` checks it).
_NOT_LIVE_CREDITS = RawStatement(
    select(
        (
            select(func.coalesce(func.sum(G.c.remaining), 0))
            .where(G.c.wallet_id == bindparam("wid"), _FUNDED, G.c.expires_at <= _NOW)
            .scalar_subquery()
            + select(func.coalesce(func.sum(G.c.remaining), 0))
            .where(
                G.c.wallet_id == bindparam("wid"),
                _FUNDED,
                G.c.effective_at > _NOW,
                or_(G.c.expires_at.is_(None), G.c.expires_at > _NOW),
            )
            .scalar_subquery()
        ).label("credits"),
        select(func.min(G.c.expires_at))
        .where(G.c.wallet_id == bindparam("wid"), _FUNDED, G.c.expires_at > _NOW)
        .scalar_subquery()
        .label("next_expiry"),
    )
)
NEVER = datetime(9999, 1, 1, tzinfo=UTC)  # live_until of a wallet whose grants never expire
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
# ... and has_credits, only for a grant that empties or refills: an UPDATE naming an indexed
# column rewrites that index's entry (SQLite) or is no HOT update (PostgreSQL)
_SET_REMAINING_AND_FLAG = RawStatement(
    update(G)
    .where(G.c.id == bindparam("gid"))
    .values(remaining=bindparam("rem"), closed_at=bindparam("closed"), has_credits=bindparam("has"))
)
_SET_LIVE_UNTIL = RawStatement(
    update(W)
    .where(W.c.id == bindparam("wid"))
    .values(live_until=bindparam("until", type_=W.c.live_until.type))
)
_SET_CREDITS = RawStatement(update(W).where(W.c.id == bindparam("wid")).values(credits=bindparam("credits")))
_SET_WALLET_SUMS = RawStatement(
    update(W)
    .where(W.c.id == bindparam("wid"))
    .values(overdraft_used=bindparam("used"), credits=bindparam("credits"), updated_at=bindparam("now"))
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
            credits=0,
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


def lock_wallet_and_find_operation(s: Tx, customer_id: str, kind: str, key: str) -> tuple[Any, Any]:
    """(the customer's wallet, locked, or None; the operation of ``kind`` with idempotency key
    ``key`` in it, or None): :func:`lock_wallet_of_customer` and :func:`find_operation` in one
    statement on SQLite. The operation has ``id``, ``request_hash`` and ``result``.

    On PostgreSQL the look-up is a second statement, after the lock: a statement that waited
    for the wallet's row lock still reads the rest of the database as of its start (READ
    COMMITTED), so a merged look-up could miss the operation another process committed with
    the same key while this one waited — and then charge it again (caught by the unique index)
    or answer 402 instead of replaying it. SQLite has one writer: nothing commits meanwhile."""
    if driver_cursor(s)[1].name != "sqlite":
        w = lock_wallet_of_customer(s, customer_id)
        return w, (None if w is None else find_operation(s, w.id, kind, key))
    w = _LOCK_WALLET_AND_OP.first(s, {"cid": customer_id, "kind": str(kind), "key": key})
    if w is None or w.op_id is None:
        return w, None
    return w, RawRow({"id": w.op_id, "request_hash": w.op_hash, "result": w.op_result})


def wallet_id_for_customer(s: Tx, customer_id: str) -> str | None:
    return s.execute(select(W.c.id).where(W.c.customer_id == customer_id)).scalar()


def _grant_state(r: Any) -> GrantState:
    return GrantState(**r._asdict())  # the row's columns are GrantState's fields (_GRANT_COLS)


def _state_of(wallet: Any) -> WalletState:
    return WalletState(
        wallet.id,
        wallet.overdraft_limit,
        wallet.overdraft_used,
        credits=wallet.credits,
        live_until=wallet.live_until,
    )


def load_state(s: Tx, wallet: Any, *, grant_ids: Iterable[str] = ()) -> WalletState:
    """The wallet with every grant that has credits left, and the grants named whatever they
    hold (cost linear in the number of grants with credits: for the sweeper's expiry and the
    balance view; commands load :func:`load_spend_head`)."""
    st = _state_of(wallet)
    ids = list(grant_ids)
    rows: Sequence[Any]
    if ids:
        rows = s.connection().execute(_SOME_GRANTS, {"wid": wallet.id, "ids": ids}).all()
    else:
        rows = _GRANTS_WITH_CREDITS.rows(s, {"wid": wallet.id})
    for r in rows:
        st.grants[r.id] = _grant_state(r)
    return st


def _read_page(s: Tx, st: WalletState, limit: int) -> None:
    if st.spend_read == 0 and limit == FIRST_PAGE:
        rows = _FIRST_SPEND_PAGE.rows(s, {"wid": st.wallet_id})
    else:
        rows = _SPEND_PAGE.rows(s, {"wid": st.wallet_id, "lim": limit, "off": st.spend_read})
    last = None
    for r in rows:
        # a grant already loaded (named by id, or read before) keeps its state in memory
        last = st.grants.get(r.id) or st.grants.setdefault(r.id, _grant_state(r))
    st.spend_read += len(rows)
    st.horizon = spend_order(last) if len(rows) == limit and last is not None else None


def load_spend_head(s: Tx, wallet: Any, *, grant_ids: Iterable[str] = ()) -> WalletState:
    """The wallet with the first :data:`FIRST_PAGE` grants with credits in spend order: every one
    of them in a wallet with fewer (one statement, as a full load), else a partial state that a
    draw extends (:func:`read_spendable`). Plus the grants named, whatever they hold (the grants
    a hold or a charge drew from)."""
    st = _state_of(wallet)
    _read_page(s, st, FIRST_PAGE)
    missing = [g for g in dict.fromkeys(grant_ids) if g not in st.grants]
    if missing:
        for r in s.connection().execute(_GRANTS_BY_ID, {"wid": wallet.id, "ids": missing}).all():
            st.grants[r.id] = _grant_state(r)
    return st


def read_spendable(
    s: Tx,
    st: WalletState,
    amount: int,
    now: datetime,
    *,
    meter: str | None = None,
    exclude: frozenset[str] = frozenset(),
) -> None:
    """Read further pages of a partial state until a draw of ``amount`` is decided by what is
    loaded (:meth:`WalletState.covers`), or every grant is read (a draw the wallet cannot cover:
    the overdraft, or a 402 whose ``available`` counts every grant). Before the command writes
    anything (:func:`persist`): pages are read by offset."""
    limit = FIRST_PAGE
    while not st.covers(amount, now, meter, exclude):
        limit *= 4
        _read_page(s, st, limit)


def balance(s: Tx, st: WalletState, now: datetime) -> int:
    """The balance after :func:`persist` of ``st``: from its grants when every grant is loaded,
    else from the stored credit sum less what the overdraft owes, and less the credits of grants
    not live now unless the wallet's ``live_until`` says there are none (equal to
    :meth:`WalletState.balance` of the fully loaded wallet). Reading them, it sets ``live_until``
    again when every grant with credits is live."""
    if st.horizon is None:
        return st.balance(now)
    if st.live_until is not None and now < st.live_until:
        return st.credits - st.overdraft_used
    row = _NOT_LIVE_CREDITS.first(s, {"wid": st.wallet_id, "now": now})
    assert row is not None
    if row.credits == 0:
        st.live_until = row.next_expiry or NEVER
        _SET_LIVE_UNTIL.execute(s, {"wid": st.wallet_id, "until": st.live_until})
    return st.credits - int(row.credits) - st.overdraft_used


def persist(
    s: Tx,
    st: WalletState,
    now: datetime,
    *,
    grant_meta: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Write back what the domain changed: new grants, remaining of touched grants, the journal,
    and the wallet's overdraft position and stored credit sum."""
    meta = grant_meta or {}
    new = set(st.new_grants)
    live_until = st.live_until
    if new:
        _INSERT_GRANT.execute(
            s,
            [
                {
                    "id": g.id,
                    "wallet_id": st.wallet_id,
                    "amount": g.amount,
                    "remaining": g.remaining,
                    "has_credits": g.remaining > 0,
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
        for gid in st.new_grants:
            if st.grants[gid].remaining > 0:
                st.note_funded(st.grants[gid], now)
    moved: dict[str, int] = {}  # grant -> what this operation's entries moved
    journal = []
    for e in st.entries:
        if e.grant_id is not None:
            moved[e.grant_id] = moved.get(e.grant_id, 0) + e.delta
        journal.append(
            {
                "wallet_id": st.wallet_id,
                "grant_id": e.grant_id,
                "operation_id": e.operation_id,
                "hold_id": e.hold_id,
                "kind": str(e.kind),
                "delta": e.delta,
                "created_at": now,
            }
        )
    touched: list[dict[str, Any]] = []
    flipped: list[dict[str, Any]] = []
    for gid in st.dirty - new:
        g = st.grants[gid]
        row = {"gid": gid, "rem": g.remaining, "closed": g.closed_at}
        # the database holds what the grant had before this operation's entries
        if (g.remaining - moved.get(gid, 0) > 0) == (g.remaining > 0):
            touched.append(row)
        else:
            row["has"] = g.remaining > 0
            flipped.append(row)
            if g.remaining > 0:
                st.note_funded(g, now)
    if touched:
        _SET_REMAINING.execute(s, touched)
    if flipped:
        _SET_REMAINING_AND_FLAG.execute(s, flipped)
    if journal:
        _INSERT_JOURNAL.execute(s, journal)
    # the stored sum of the grants' remaining moves with the entries, in this transaction
    if st.overdraft_dirty:
        _SET_WALLET_SUMS.execute(
            s, {"wid": st.wallet_id, "used": st.overdraft_used, "credits": st.credits, "now": now}
        )
    elif moved:
        _SET_CREDITS.execute(s, {"wid": st.wallet_id, "credits": st.credits})
    if st.live_until != live_until:
        _SET_LIVE_UNTIL.execute(s, {"wid": st.wallet_id, "until": st.live_until})
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
    if hold_id is None:
        rows = _DRAWN_BY_OP.rows(s, {"oid": operation_id})
    else:
        rows = _DRAWN_BY_HOLD.rows(s, {"hid": hold_id})
    return draw_of((r.grant_id, r.delta, r.kind) for r in rows)


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


# ---- holds: the gateways' hot path (hold → settle | release), prebuilt like the debit's
_GET_HOLD = RawStatement(select(H).where(H.c.id == bindparam("hid")))
_FIND_HOLD = RawStatement(select(H).where(H.c.operation_id == bindparam("oid")))
_INSERT_HOLD = _insert_all(H)
_RESOLVE_HOLD = RawStatement(
    update(H)
    .where(H.c.id == bindparam("hid"))
    .values(
        status=bindparam("status"),
        settled_amount=bindparam("settled_amount"),
        resolution_hash=bindparam("resolution_hash"),
        resolution_operation_id=bindparam("resolution_operation_id"),
        result=bindparam("result", type_=H.c.result.type),
        resolved_at=bindparam("resolved_at", type_=H.c.resolved_at.type),
    )
)
_SET_HOLD_EXPIRY = RawStatement(
    update(H)
    .where(H.c.id == bindparam("hid"))
    .values(expires_at=bindparam("expires_at", type_=H.c.expires_at.type))
)
# a hold with its entries (one row per entry, in journal order; one row of NULL entry columns
# when it has none): the hold a settle or release resolves and what it took, in one statement
_HOLD_WITH_ENTRIES = RawStatement(
    select(H, J.c.grant_id.label("e_grant_id"), J.c.delta.label("e_delta"), J.c.kind.label("e_kind"))
    .select_from(H.outerjoin(J, J.c.hold_id == H.c.id))
    .where(H.c.id == bindparam("hid"))
    .order_by(J.c.id)
)
# what a hold took, from its entries (ix_journal_hold), and what an operation took
_DRAWN_BY_HOLD = RawStatement(
    select(J.c.grant_id, J.c.delta, J.c.kind).where(J.c.hold_id == bindparam("hid")).order_by(J.c.id)
)
_DRAWN_BY_OP = RawStatement(
    select(J.c.grant_id, J.c.delta, J.c.kind).where(J.c.operation_id == bindparam("oid")).order_by(J.c.id)
)


def get_hold(s: Tx, hold_id: str) -> Any:
    """The ``holds`` row (every column), or None."""
    return _GET_HOLD.first(s, {"hid": hold_id})


def hold_and_draw(s: Tx, hold_id: str) -> tuple[Any, Draw | None]:
    """The ``holds`` row and what it took (:func:`drawn_by` of the hold) in one statement;
    (None, None) when there is no such hold."""
    rows = _HOLD_WITH_ENTRIES.rows(s, {"hid": hold_id})
    if not rows:
        return None, None
    return rows[0], draw_of((r.e_grant_id, r.e_delta, r.e_kind) for r in rows if r.e_delta is not None)


def find_hold(s: Tx, operation_id: str) -> Any:
    return _FIND_HOLD.first(s, {"oid": operation_id})


def insert_hold(s: Tx, **values: Any) -> None:
    """A new hold: every column given (those left out are NULL)."""
    values["status"] = str(values["status"])
    _INSERT_HOLD.execute(s, values)


def resolve_hold(
    s: Tx,
    hold_id: str,
    *,
    status: str,
    resolution_operation_id: str,
    resolution_hash: str,
    result: dict[str, Any],
    resolved_at: datetime,
    settled_amount: int | None = None,
) -> None:
    """Write a hold's one resolution (settled, released or expired)."""
    _RESOLVE_HOLD.execute(
        s,
        {
            "hid": hold_id,
            "status": str(status),
            "settled_amount": settled_amount,
            "resolution_hash": resolution_hash,
            "resolution_operation_id": resolution_operation_id,
            "result": result,
            "resolved_at": resolved_at,
        },
    )


def set_hold_expiry(s: Tx, hold_id: str, expires_at: datetime) -> None:
    _SET_HOLD_EXPIRY.execute(s, {"hid": hold_id, "expires_at": expires_at})


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


# ---- per-key spend (ledger/keyspend.py): one row per key and UTC day, written with the journal
KS = table_of(KeySpend)
_KEY_SPEND_COLS = (KS.c.day, (KS.c.spent + KS.c.held).label("used"))
_KEY_SPEND_ALL = RawStatement(select(*_KEY_SPEND_COLS).where(KS.c.api_key_id == bindparam("kid")))
_KEY_SPEND_SINCE = RawStatement(
    select(*_KEY_SPEND_COLS).where(KS.c.api_key_id == bindparam("kid"), KS.c.day >= bindparam("since"))
)
_ADD_KEY_SPEND = RawStatement(
    update(KS)
    .where(KS.c.api_key_id == bindparam("kid"), KS.c.day == bindparam("d"))
    .values(
        spent=KS.c.spent + bindparam("sp", type_=KS.c.spent.type),
        held=KS.c.held + bindparam("hd", type_=KS.c.held.type),
    )
)
_INSERT_KEY_SPEND = RawStatement(
    insert(KS).values(
        api_key_id=bindparam("kid"), day=bindparam("d"), spent=bindparam("sp"), held=bindparam("hd")
    )
)


def key_spend_rows(s: Tx, key_id: str, since: str | None) -> list[tuple[str, int]]:
    """A key's ``(day, spent + held)`` rows, from ``since`` (a YYYY-MM-DD day) or all."""
    if since is None:
        rows = _KEY_SPEND_ALL.rows(s, {"kid": key_id})
    else:
        rows = _KEY_SPEND_SINCE.rows(s, {"kid": key_id, "since": since})
    return [(r.day, int(r.used)) for r in rows]


def add_key_spend(s: Tx, key_id: str, day: str, *, spent: int, held: int) -> None:
    """Add to a key's row of ``day``, creating it. The caller holds the wallet lock of the key's
    customer, so no other transaction writes this row meanwhile."""
    params = {"kid": key_id, "d": day, "sp": spent, "hd": held}
    if _ADD_KEY_SPEND.execute(s, params).rowcount == 0:
        _INSERT_KEY_SPEND.execute(s, params)
