"""All of the payments domain's SQL writes (and the reads its units of work need)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement
from tollkeep.payments.models import Checkout, InboxEvent, Payment, PaymentRefund, ProviderCustomer

__all__ = [
    "claim_checkout",
    "claim_events",
    "delete_old_events",
    "get_checkout",
    "get_event",
    "get_payment",
    "insert_checkout",
    "insert_event",
    "insert_payment",
    "insert_refund",
    "link_customer",
    "linked_customer",
    "mark_checkout_paid",
    "provider_ref_of",
    "release_claims",
    "replay_event",
    "set_checkout_provider",
    "set_event_outcome",
    "set_payment",
    "set_refund_outcome",
]

IBX = table_of(InboxEvent)
CHK = table_of(Checkout)
PAY = table_of(Payment)
PRF = table_of(PaymentRefund)
PCU = table_of(ProviderCustomer)

PENDING, PROCESSED, IGNORED, FAILED = "pending", "processed", "ignored", "failed"


def _prebuilt_insert(table: Any) -> dict[str, RawStatement]:
    """INSERT of every column of ``table`` ON CONFLICT DO NOTHING RETURNING its key, prebuilt per
    dialect (kit/rawsql.py): the inbox worker applies events on the single SQLite writer, where
    SQLAlchemy's per-statement bookkeeping costs more than the statement."""
    pk = next(iter(table.primary_key.columns))
    return {
        name: RawStatement(
            make(table)
            .values({c.name: bindparam(c.name) for c in table.columns})
            .on_conflict_do_nothing()
            .returning(pk)
        )
        for name, make in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
    }


def _insert_all(s: Tx, stmts: dict[str, RawStatement], values: dict[str, Any]) -> bool:
    """Like :func:`_insert_new`, with a prebuilt statement (columns left out are NULL)."""
    return stmts[s.get_bind().dialect.name].execute(s, values).fetchone() is not None


def _insert_new(s: Tx, table: Any, values: dict[str, Any]) -> bool:
    """INSERT unless a row with the same unique key exists; True when this one went in. One
    statement, so two writers racing on one key never both win (and neither fails)."""
    dialect = s.get_bind().dialect.name
    make = pg_insert if dialect == "postgresql" else sqlite_insert
    # RETURNING, not rowcount: psycopg's rowcount of an upsert is not reliable through SQLAlchemy
    pk = next(iter(table.primary_key.columns))
    return s.execute(make(table).values(**values).on_conflict_do_nothing().returning(pk)).first() is not None


# ---- inbox --------------------------------------------------------------------------------------
_EVENT_COLUMNS = (
    "id",
    "provider",
    "event_id",
    "type",
    "status",
    "body",
    "headers",
    "attempts",
    "received_at",
    "available_at",
    "claimed_by",
    "processed_at",
    "error",
    "result",
)
# the receive path's two statements, prebuilt (kit/rawsql.py): a webhook is stored by the single
# SQLite writer, where SQLAlchemy's per-statement bookkeeping would cost more than the insert
_INSERT_EVENT = {
    name: RawStatement(
        make(IBX)
        .values({c: bindparam(c) for c in _EVENT_COLUMNS})
        .on_conflict_do_nothing()
        .returning(IBX.c.id)
    )
    for name, make in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
}
_EXISTING_EVENT = RawStatement(
    select(IBX.c.id).where(IBX.c.provider == bindparam("provider"), IBX.c.event_id == bindparam("event_id"))
)


def insert_event(
    s: Tx,
    *,
    provider: str,
    event_id: str,
    type: str,
    status: str,
    body: bytes,
    headers: dict[str, str],
    now: datetime,
    available_at: datetime | None = None,
) -> tuple[str, bool]:
    """Store a verified event; (its inbox id, whether it is new). A duplicate stores nothing.
    One INSERT ... ON CONFLICT DO NOTHING RETURNING (so two deliveries racing on one event id
    never both store it, and neither fails); a duplicate then reads the stored row's id."""
    row_id = new_id("ibx")
    values = {
        "id": row_id,
        "provider": provider,
        "event_id": event_id,
        "type": type,
        "status": status,
        "body": body,
        "headers": headers,
        "attempts": 0,
        "received_at": now,
        "available_at": available_at or now,
        "claimed_by": None,
        "processed_at": now if status == IGNORED else None,
        "error": None,
        "result": None,
    }
    # RETURNING, not rowcount (psycopg's rowcount of an upsert is not reliable)
    if _INSERT_EVENT[s.get_bind().dialect.name].execute(s, values).fetchone() is not None:
        return row_id, True
    existing = _EXISTING_EVENT.first(s, {"provider": provider, "event_id": event_id})
    return str(existing.id), False


_INSERT_PAYMENT = _prebuilt_insert(PAY)
_INSERT_LINK = _prebuilt_insert(PCU)
_PAYMENT = RawStatement(
    select(PAY)
    .where(PAY.c.provider == bindparam("provider"), PAY.c.payment_id == bindparam("payment_id"))
    .with_for_update()
)
_LINKED = RawStatement(
    select(PCU.c.customer_id).where(
        PCU.c.provider == bindparam("provider"), PCU.c.external_ref == bindparam("external_ref")
    )
)


def _outcome_statement(*, pending: bool, claimed: bool) -> RawStatement:
    values: dict[str, Any] = {"status": bindparam("status"), "error": bindparam("error"), "claimed_by": None}
    if pending:
        values["available_at"] = bindparam("available_at")
    else:
        values["processed_at"] = bindparam("processed_at")
        values["result"] = bindparam("result", type_=IBX.c.result.type)
    stmt = update(IBX).where(IBX.c.id == bindparam("inbox_id"))
    if claimed:
        stmt = stmt.where(IBX.c.claimed_by == bindparam("claimant"), IBX.c.status == PENDING)
    return RawStatement(stmt.values(values))


_SET_OUTCOME = {
    (pending, claimed): _outcome_statement(pending=pending, claimed=claimed)
    for pending in (True, False)
    for claimed in (True, False)
}


def get_event(s: Tx, inbox_id: str) -> Any:
    return s.execute(select(IBX).where(IBX.c.id == inbox_id)).first()


def claim_events(s: Tx, now: datetime, lease_until: datetime, limit: int, claimant: str) -> list[Any]:
    """Take up to ``limit`` due pending events, oldest first, leased until ``lease_until`` (one
    more attempt each). PostgreSQL: ``FOR UPDATE SKIP LOCKED``, so concurrent workers get
    disjoint rows; the lease keeps them from everyone else until it runs out."""
    rows = s.execute(
        select(IBX.c.id)
        .where(IBX.c.status == PENDING, IBX.c.available_at <= now)
        .order_by(IBX.c.available_at, IBX.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    ).all()
    ids = [r.id for r in rows]
    if not ids:
        return []
    s.execute(
        update(IBX)
        .where(IBX.c.id.in_(ids))
        .values(available_at=lease_until, attempts=IBX.c.attempts + 1, claimed_by=claimant)
    )
    return list(s.execute(select(IBX).where(IBX.c.id.in_(ids)).order_by(IBX.c.received_at)).all())


def any_due(s: Tx, now: datetime) -> bool:
    return (
        s.execute(select(IBX.c.id).where(IBX.c.status == PENDING, IBX.c.available_at <= now).limit(1)).first()
        is not None
    )


def release_claims(s: Tx, claimants: Iterable[str], now: datetime) -> int:
    """Claims of workers known to be dead come back at once (not after their lease)."""
    names = list(claimants)
    if not names:
        return 0
    res = s.execute(
        update(IBX)
        .where(IBX.c.status == PENDING, IBX.c.claimed_by.in_(names))
        .values(available_at=now, claimed_by=None)
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


def claimants(s: Tx, prefix: str) -> list[str]:
    return [
        str(r[0])
        for r in s.execute(
            select(IBX.c.claimed_by)
            .where(IBX.c.status == PENDING, IBX.c.claimed_by.like(prefix + "%"))
            .distinct()
        ).all()
    ]


def set_event_outcome(
    s: Tx,
    inbox_id: str,
    *,
    status: str,
    now: datetime,
    error: str | None = None,
    result: dict[str, Any] | None = None,
    available_at: datetime | None = None,
    claimant: str | None = None,
) -> bool:
    """Record what processing did. ``claimant``: only if this worker still holds the claim (a
    worker whose lease ran out and was overtaken changes nothing)."""
    pending = status == PENDING
    params: dict[str, Any] = {"inbox_id": inbox_id, "status": status, "error": error, "claimant": claimant}
    if pending:
        params["available_at"] = available_at or now
    else:
        params["processed_at"] = now
        params["result"] = result
    res = _SET_OUTCOME[(pending, claimant is not None)].execute(s, params)
    return int(res.rowcount) == 1


def replay_event(s: Tx, inbox_id: str, now: datetime) -> bool:
    res = s.execute(
        update(IBX)
        .where(IBX.c.id == inbox_id)
        .values(status=PENDING, available_at=now, attempts=0, error=None, claimed_by=None, processed_at=None)
    )
    return int(res.rowcount) == 1  # type: ignore[attr-defined]


def delete_old_events(s: Tx, before: datetime, limit: int) -> int:
    """Prune processed and ignored events received before ``before`` (failed and pending ones
    stay until an operator acts)."""
    ids = [
        r.id
        for r in s.execute(
            select(IBX.c.id)
            .where(IBX.c.status.in_((PROCESSED, IGNORED)), IBX.c.received_at < before)
            .limit(limit)
        ).all()
    ]
    if not ids:
        return 0
    return int(s.execute(delete(IBX).where(IBX.c.id.in_(ids))).rowcount)  # type: ignore[attr-defined]


# ---- checkouts ----------------------------------------------------------------------------------
def insert_checkout(s: Tx, **values: Any) -> None:
    s.execute(CHK.insert().values(**values))


def get_checkout(s: Tx, checkout_id: str, *, lock: bool = False) -> Any:
    stmt = select(CHK).where(CHK.c.id == checkout_id)
    if lock:
        stmt = stmt.with_for_update()
    return s.execute(stmt).first()


def set_checkout_provider(s: Tx, checkout_id: str, *, provider_ref: str, url: str) -> None:
    s.execute(update(CHK).where(CHK.c.id == checkout_id).values(provider_ref=provider_ref, url=url))


def mark_checkout_paid(s: Tx, checkout_id: str, *, payment_id: str, now: datetime) -> bool:
    res = s.execute(
        update(CHK)
        .where(CHK.c.id == checkout_id, CHK.c.status != "paid")
        .values(status="paid", payment_id=payment_id, paid_at=now)
    )
    return int(res.rowcount) == 1  # type: ignore[attr-defined]


def claim_checkout(s: Tx, checkout_id: str, *, key_id: str | None, now: datetime) -> bool:
    """Mark a paid checkout's key as handed out; False when someone claimed it first."""
    res = s.execute(
        update(CHK)
        .where(CHK.c.id == checkout_id, CHK.c.status == "paid", CHK.c.claimed_at.is_(None))
        .values(claimed_at=now, key_id=key_id)
    )
    return int(res.rowcount) == 1  # type: ignore[attr-defined]


def expire_checkouts(s: Tx, now: datetime) -> int:
    res = s.execute(
        update(CHK).where(CHK.c.status == "open", CHK.c.expires_at < now).values(status="expired")
    )
    return int(res.rowcount)  # type: ignore[attr-defined]


# ---- payments -----------------------------------------------------------------------------------
def insert_payment(s: Tx, **values: Any) -> bool:
    return _insert_all(
        s,
        _INSERT_PAYMENT,
        {"credits": 0, "refunded_amount": 0, "credits_taken_back": 0, "shortfall": 0, **values},
    )


def get_payment(s: Tx, provider: str, payment_id: str, *, lock: bool = False) -> Any:
    if lock:
        return _PAYMENT.first(s, {"provider": provider, "payment_id": payment_id})
    return s.execute(select(PAY).where(PAY.c.provider == provider, PAY.c.payment_id == payment_id)).first()


def set_payment(s: Tx, pay_id: str, **values: Any) -> None:
    s.execute(update(PAY).where(PAY.c.id == pay_id).values(**values))


def insert_refund(s: Tx, **values: Any) -> bool:
    return _insert_new(s, PRF, values)


def refunds_of(s: Tx, pay_id: str) -> Sequence[Any]:
    return s.execute(select(PRF).where(PRF.c.payment == pay_id).order_by(PRF.c.created_at)).all()


# ---- provider accounts --------------------------------------------------------------------------
def linked_customer(s: Tx, provider: str, external_ref: str) -> str | None:
    row = _LINKED.first(s, {"provider": provider, "external_ref": external_ref})
    return None if row is None else str(row.customer_id)


def link_customer(s: Tx, provider: str, external_ref: str, customer_id: str, now: datetime) -> None:
    _insert_all(
        s,
        _INSERT_LINK,
        {
            "id": new_id("pcu"),
            "provider": provider,
            "external_ref": external_ref,
            "customer_id": customer_id,
            "created_at": now,
        },
    )


def provider_ref_of(s: Tx, provider: str, customer_id: str) -> str | None:
    return s.execute(
        select(PCU.c.external_ref)
        .where(PCU.c.provider == provider, PCU.c.customer_id == customer_id)
        .order_by(PCU.c.created_at)
        .limit(1)
    ).scalar_one_or_none()


def count_by_status(s: Tx) -> dict[str, int]:
    return {
        str(k): int(v) for k, v in s.execute(select(IBX.c.status, func.count()).group_by(IBX.c.status)).all()
    }


def set_refund_outcome(s: Tx, refund_row: str, *, taken: int, shortfall: int) -> None:
    s.execute(update(PRF).where(PRF.c.id == refund_row).values(taken=taken, shortfall=shortfall))
