"""Every write of the subscriptions domain (tests/architecture: SQL writes live in repositories),
and the renewal worker's claim."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update

from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement
from tollkeep.subscriptions.models import Code, CodeRedemption, Invoice, PlanChange, Subscription

__all__ = [
    "claim_due",
    "get_change",
    "get_invoice",
    "get_subscription",
    "insert_change",
    "insert_code",
    "insert_invoice",
    "insert_subscription",
    "invoice_of_cycle",
    "redeem_code",
    "update_change",
    "update_code",
    "update_invoice",
    "update_subscription",
    "void_open_invoices",
]

SUB = table_of(Subscription)
INV = table_of(Invoice)
PC = table_of(PlanChange)
CODE = table_of(Code)
RED = table_of(CodeRedemption)


# The renewal worker's statements run prebuilt (kit/rawsql.py: compiled once, on the driver
# cursor; the same statements through Session.execute with TOLLKEEP_RAW_SQL=0). An INSERT or
# UPDATE is built once per set of columns it is given, so it writes exactly those columns (and
# the models' defaults), as the Core statement it replaces did.
_BUILT: dict[tuple[str, str, frozenset[str]], RawStatement] = {}


def _write(s: Tx, kind: str, table: Table, values: dict[str, Any], row_id: str | None = None) -> None:
    if kind == "insert":  # the models' Python-side defaults, as Core would fill them in
        for c in table.c:
            d = c.default
            if c.key not in values and d is not None and getattr(d, "is_scalar", False):
                values[c.key] = d.arg  # type: ignore[attr-defined]
            elif c.key not in values and d is not None and getattr(d, "is_callable", False):
                values[c.key] = d.arg(None)  # type: ignore[attr-defined]
    key = (kind, table.name, frozenset(values))
    stmt = _BUILT.get(key)
    if stmt is None:
        sets: dict[str, Any] = {k: bindparam(k) for k in values}
        built = (
            insert(table).values(sets)
            if kind == "insert"
            else update(table).where(table.c.id == bindparam("row_id")).values(sets)
        )
        stmt = _BUILT[key] = RawStatement(built)
    stmt.execute(s, values if row_id is None else {**values, "row_id": row_id})


def insert_subscription(s: Tx, **values: Any) -> None:
    _write(s, "insert", SUB, values)


def update_subscription(s: Tx, sub_id: str, **values: Any) -> None:
    _write(s, "update", SUB, values, sub_id)


def insert_invoice(s: Tx, **values: Any) -> None:
    _write(s, "insert", INV, values)


def update_invoice(s: Tx, invoice_id: str, **values: Any) -> None:
    _write(s, "update", INV, values, invoice_id)


def void_open_invoices(s: Tx, sub_id: str, now: datetime) -> None:
    s.execute(
        update(INV)
        .where(INV.c.subscription_id == sub_id, INV.c.status.in_(("draft", "open")))
        .values(status="void", voided_at=now, updated_at=now)
    )


_SUB = select(SUB).where(SUB.c.id == bindparam("sid"))
_GET_SUB = (RawStatement(_SUB), RawStatement(_SUB.with_for_update()))
_INV = select(INV).where(INV.c.id == bindparam("iid"))
_GET_INV = (RawStatement(_INV), RawStatement(_INV.with_for_update()))
_INV_OF_CYCLE = RawStatement(
    select(INV).where(
        INV.c.subscription_id == bindparam("sid"), INV.c.cycle == bindparam("cycle"), INV.c.kind == "renewal"
    )
)


def get_subscription(s: Tx, sub_id: str, *, lock: bool = False) -> Any:
    return _GET_SUB[lock].first(s, {"sid": sub_id})


def get_invoice(s: Tx, invoice_id: str, *, lock: bool = False) -> Any:
    return _GET_INV[lock].first(s, {"iid": invoice_id})


def invoice_of_cycle(s: Tx, sub_id: str, cycle: int) -> Any:
    """The renewal invoice of ``cycle`` (upgrade invoices are not cycles)."""
    return _INV_OF_CYCLE.first(s, {"sid": sub_id, "cycle": cycle})


def insert_change(s: Tx, **values: Any) -> None:
    s.execute(insert(PC).values(**values))


def update_change(s: Tx, change_id: str, **values: Any) -> None:
    s.execute(update(PC).where(PC.c.id == change_id).values(**values))


def get_change(s: Tx, change_id: str) -> Any:
    return s.execute(select(PC).where(PC.c.id == change_id)).first()


def insert_code(s: Tx, **values: Any) -> None:
    s.execute(insert(CODE).values(**values))


def update_code(s: Tx, code: str, **values: Any) -> None:
    s.execute(update(CODE).where(CODE.c.code == code).values(**values))


def redeem_code(
    s: Tx, code: str, redemption_id: str, customer_id: str, now: datetime, **refs: Any
) -> str | None:
    """Take one redemption of ``code`` for ``customer_id``, atomically: the counter moves only
    while it is under ``max_redemptions`` (one conditional UPDATE: under concurrency the last one
    is taken once), and the customer's redemption row is unique per code. Returns None when
    taken, else why not (``code_exhausted``, ``code_already_redeemed``)."""
    mine = s.execute(select(RED.c.id).where(RED.c.code == code, RED.c.customer_id == customer_id)).first()
    if mine is not None:
        return "code_already_redeemed"
    moved = s.execute(
        update(CODE)
        .where(
            CODE.c.code == code,
            CODE.c.disabled_at.is_(None),
            (CODE.c.max_redemptions.is_(None)) | (CODE.c.redemptions < CODE.c.max_redemptions),
        )
        .values(redemptions=CODE.c.redemptions + 1, updated_at=now)
    ).rowcount  # type: ignore[attr-defined]
    if moved != 1:
        return "code_exhausted"
    # unique (code, customer): a concurrent second redemption by the same customer fails here
    s.execute(
        insert(RED).values(id=redemption_id, code=code, customer_id=customer_id, created_at=now, **refs)
    )
    return None


def claim_due(s: Tx, now: datetime, lease_until: datetime, limit: int) -> list[Any]:
    """Take up to ``limit`` subscriptions whose ``next_action_at`` has come, leased until
    ``lease_until`` (their ``next_action_at`` moves there, so nobody else takes them meanwhile;
    a worker killed mid-way leaves them due again when the lease ends). PostgreSQL:
    ``FOR UPDATE SKIP LOCKED``, so concurrent workers get disjoint rows."""
    rows = s.execute(
        select(SUB.c.id, SUB.c.customer_id)
        .where(SUB.c.next_action_at.is_not(None), SUB.c.next_action_at <= now)
        .order_by(SUB.c.next_action_at, SUB.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    if rows:
        s.execute(update(SUB).where(SUB.c.id.in_([r.id for r in rows])).values(next_action_at=lease_until))
    return list(rows)
