"""The customers domain's writes (and the reads a write needs inside its unit of work).

Writes ``customers`` except ``plan`` / ``plan_changed_at`` (the plans domain's columns)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select, update

from tollkeep.customers.models import Customer
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of

__all__ = ["get", "id_by_external_id", "insert_customer", "lock_status", "update_customer"]

C = table_of(Customer)
WRITABLE = frozenset({"email", "name", "metadata", "status"})


def id_by_external_id(s: Tx, external_id: str) -> str | None:
    return s.execute(select(C.c.id).where(C.c.external_id == external_id)).scalar()


def insert_customer(
    s: Tx,
    *,
    id: str,
    external_id: str,
    email: str | None,
    name: str | None,
    anonymous: bool,
    metadata: dict[str, Any] | None,
    now: datetime,
) -> None:
    s.execute(
        insert(C).values(
            id=id,
            external_id=external_id,
            email=email,
            name=name,
            status="active",
            anonymous=anonymous,
            plan=None,
            metadata=metadata or {},
            created_at=now,
            updated_at=now,
        )
    )


def lock_status(s: Tx, customer_id: str) -> str | None:
    """The customer's status, its row locked for the transaction (PostgreSQL; SQLite has one
    writer): two concurrent status changes see each other's result. None: no such customer."""
    return s.execute(select(C.c.status).where(C.c.id == customer_id).with_for_update()).scalar()


def update_customer(s: Tx, customer_id: str, values: dict[str, Any], now: datetime) -> bool:
    """Set ``values`` (email, name, metadata, status); False if there is no such customer."""
    assert set(values) <= WRITABLE, values
    res = s.execute(update(C).where(C.c.id == customer_id).values(**values, updated_at=now))
    return bool(res.rowcount)  # type: ignore[attr-defined]


def get(s: Tx, customer_id: str) -> Any:
    return s.execute(select(C).where(C.c.id == customer_id)).first()
