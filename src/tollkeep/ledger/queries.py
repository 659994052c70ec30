"""Read side of the ledger: balances, grants, usage events, journal pages. No locks taken."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select

from tollkeep.kit.clock import iso, usage_period
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import NotFound
from tollkeep.kit.models import table_of
from tollkeep.kit.pagination import clamp_limit, page, parse_time_cursor, time_cursor
from tollkeep.ledger import repository as repo
from tollkeep.ledger.keyspend import day_of
from tollkeep.ledger.models import Grant, JournalEntry, KeySpend, Operation
from tollkeep.ledger.usage import subscription_periods

__all__ = ["balance", "journal", "key_spend", "usage_events"]

G = table_of(Grant)
J = table_of(JournalEntry)
O = table_of(Operation)  # noqa: E741


def _wallet(s: Tx, customer_id: str) -> Any:
    wid = repo.wallet_id_for_customer(s, customer_id)
    if wid is None:
        raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
    w = s.execute(select(repo.W).where(repo.W.c.id == wid)).first()
    assert w is not None
    return w


def balance(s: Tx, customer_id: str, now: datetime, unit: str) -> dict[str, Any]:
    """The wallet as the domain sees it: balance, available and the grants with credits left,
    all read through :class:`WalletState` so they follow the very rules a charge follows."""
    w = _wallet(s, customer_id)
    st = repo.load_state(s, w)
    grants = [
        {
            "id": g.id,
            "source": g.source,
            "amount": g.amount,
            "remaining": g.remaining,
            "priority": g.priority,
            "meter": g.meter,
            "effective_at": iso(g.effective_at),
            "expires_at": iso(g.expires_at),
            "live": g.live(now),
        }
        for g in sorted(st.grants.values(), key=lambda g: (g.priority, g.created_at, g.id))
    ]
    scoped = {g.meter for g in st.grants.values() if g.meter is not None and g.live(now)}
    start, end, key = usage_period("month", now, subscription_periods(w))
    return {
        "customer_id": customer_id,
        "balance": st.balance(now),
        # the one definition a 402 uses too: what a charge (no meter, no cap) could draw now
        "available": st.available(now),
        # meters with credits of their own (scoped grants): what a charge on that meter could draw
        "available_by_meter": {m: st.available(now, m) for m in sorted(scoped)},
        "held": repo.open_holds_total(s, w.id),
        "overdraft_limit": w.overdraft_limit,
        "overdraft_used": w.overdraft_used,
        "unit": unit,
        "grants": grants,
        # the month tiered prices and monthly caps count now (kit.clock.usage_period)
        "usage_period": {
            "start": iso(start),
            "end": iso(end),
            "source": "calendar" if key.startswith("m:") else "subscription",
        },
    }


def usage_events(
    s: Tx,
    customer_id: str,
    *,
    limit: int | None = None,
    after: str | None = None,
    meter: str | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """A customer's charges (usage events and settled holds), strictly newest first: ordered by
    (created_at, id) descending, a total order; a settled hold is listed at the time it was
    settled. ``after`` is the (created_at, id) cursor of the previous page's last row."""
    n = clamp_limit(limit)
    wid = repo.wallet_id_for_customer(s, customer_id)
    if wid is None:
        return page([], n)
    stmt = (
        select(O)
        .where(O.c.wallet_id == wid, O.c.kind.in_(("usage", "settle")))
        .order_by(O.c.created_at.desc(), O.c.id.desc())
        .limit(n + 1)
    )
    if after:
        at, last_id = parse_time_cursor(after)
        stmt = stmt.where(
            O.c.created_at <= at, or_(O.c.created_at < at, and_(O.c.created_at == at, O.c.id < last_id))
        )
    if meter:
        stmt = stmt.where(O.c.meter == meter)
    items = [
        {
            "event_id": o.id,
            "meter": o.meter,
            "quantity": None if o.quantity is None else format(Decimal(o.quantity).normalize(), "f"),
            "charged": o.amount,
            "refunded": o.refunded,
            "idempotency_key": o.idempotency_key,
            "properties": o.properties or {},
            "catalog_version": o.catalog_version,
            "hold_id": o.ref_id,
            "created_at": iso(o.created_at),
        }
        for o in s.execute(stmt)
    ]
    return page(
        items,
        n,
        max_bytes=max_bytes,
        cursor=lambda e: time_cursor(datetime.fromisoformat(e["created_at"]), e["event_id"]),
    )


def journal(s: Tx, customer_id: str, *, limit: int | None = None, after: int | None = None) -> dict[str, Any]:
    w = _wallet(s, customer_id)
    n = clamp_limit(limit, 100)
    stmt = select(J).where(J.c.wallet_id == w.id).order_by(J.c.id).limit(n + 1)
    if after is not None:
        stmt = stmt.where(J.c.id > after)
    items = [
        {
            "id": e.id,
            "kind": e.kind,
            "delta": e.delta,
            "grant_id": e.grant_id,
            "operation_id": e.operation_id,
            "hold_id": e.hold_id,
            "created_at": iso(e.created_at),
        }
        for e in s.execute(stmt)
    ]
    return page(items, n)


def key_spend(s: Tx, key_id: str, now: datetime) -> dict[str, dict[str, int]]:
    """What an API key has spent and its open holds reserve: in all, this UTC month, today."""
    ks = table_of(KeySpend)
    day = day_of(now)
    out = {w: {"spent": 0, "held": 0} for w in ("total", "month", "day")}
    for d, spent, held in s.execute(select(ks.c.day, ks.c.spent, ks.c.held).where(ks.c.api_key_id == key_id)):
        windows = ["total"] + (["month"] if d[:7] == day[:7] else []) + (["day"] if d == day else [])
        for w in windows:
            out[w]["spent"] += int(spent)
            out[w]["held"] += int(held)
    return out
