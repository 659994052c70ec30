"""Read models of the customers domain: a customer's view, look-ups, the paginated list."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select

from tollkeep.customers.models import Customer
from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.pagination import clamp_limit, page

__all__ = ["customer_view", "find", "install_customer", "list_customers"]

C = table_of(Customer)


def customer_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "external_id": row.external_id,
        "email": row.email,
        "name": row.name,
        "status": row.status,
        "anonymous": bool(row.anonymous),
        "plan": row.plan,
        "metadata": row.metadata or {},
        "created_at": iso(row.created_at),
    }


def find(s: Tx, ref: str) -> Any:
    """By id or by external id."""
    return s.execute(select(C).where(or_(C.c.id == ref, C.c.external_id == ref))).first()


def install_customer(s: Tx, external_id: str) -> Any:
    """(id, anonymous) of the customer with this external id, or None."""
    return s.execute(select(C.c.id, C.c.anonymous).where(C.c.external_id == external_id)).first()


def list_customers(
    s: Tx,
    *,
    limit: int | None = None,
    after: str | None = None,
    status: str | None = None,
    q: str | None = None,
    include_anonymous: bool = False,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    n = clamp_limit(limit)
    stmt = select(C).order_by(C.c.id).limit(n + 1)
    if after:
        stmt = stmt.where(C.c.id > after)
    if status:
        stmt = stmt.where(C.c.status == status)
    if not include_anonymous:
        stmt = stmt.where(C.c.anonymous.is_(False))
    if q:
        like = f"%{q.lower()}%"
        stmt = stmt.where(or_(func.lower(C.c.external_id).like(like), func.lower(C.c.email).like(like)))
    rows = [customer_view(r) for r in s.execute(stmt)]
    return page(rows, n, max_bytes=max_bytes)
