"""Every write of the subscriptions domain (tests/architecture: SQL writes live in repositories),
and the renewal worker's claim."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.subscriptions.models import Invoice, Subscription

__all__ = [
    "claim_due",
    "get_invoice",
    "get_subscription",
    "insert_invoice",
    "insert_subscription",
    "invoice_of_cycle",
    "update_invoice",
    "update_subscription",
    "void_open_invoices",
]

SUB = table_of(Subscription)
INV = table_of(Invoice)


def insert_subscription(s: Tx, **values: Any) -> None:
    s.execute(insert(SUB).values(**values))


def update_subscription(s: Tx, sub_id: str, **values: Any) -> None:
    s.execute(update(SUB).where(SUB.c.id == sub_id).values(**values))


def insert_invoice(s: Tx, **values: Any) -> None:
    s.execute(insert(INV).values(**values))


def update_invoice(s: Tx, invoice_id: str, **values: Any) -> None:
    s.execute(update(INV).where(INV.c.id == invoice_id).values(**values))


def void_open_invoices(s: Tx, sub_id: str, now: datetime) -> None:
    s.execute(
        update(INV)
        .where(INV.c.subscription_id == sub_id, INV.c.status.in_(("draft", "open")))
        .values(status="void", voided_at=now, updated_at=now)
    )


def get_subscription(s: Tx, sub_id: str, *, lock: bool = False) -> Any:
    q = select(SUB).where(SUB.c.id == sub_id)
    return s.execute(q.with_for_update() if lock else q).first()


def get_invoice(s: Tx, invoice_id: str, *, lock: bool = False) -> Any:
    q = select(INV).where(INV.c.id == invoice_id)
    return s.execute(q.with_for_update() if lock else q).first()


def invoice_of_cycle(s: Tx, sub_id: str, cycle: int) -> Any:
    return s.execute(select(INV).where(INV.c.subscription_id == sub_id, INV.c.cycle == cycle)).first()


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
