"""The keys domain's SQL: ``api_keys`` is written here and nowhere else. Reads the
``customers`` table only for a customer's status (authentication needs it with the key)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, select, update

from tollkeep.customers.models import Customer
from tollkeep.keys.models import ApiKey, KeyStatus
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement

__all__ = [
    "active_key_of",
    "customer_status",
    "get_key",
    "insert_key",
    "key_for_auth",
    "list_keys",
    "replacement_of",
    "set_key",
    "spend_limits",
]

K = table_of(ApiKey)
C = table_of(Customer)


def customer_status(s: Tx, customer_id: str) -> str | None:
    return s.execute(select(C.c.status).where(C.c.id == customer_id)).scalar()


def active_key_of(s: Tx, customer_id: str, now: datetime) -> Any:
    """The customer's newest active, unexpired key, or None."""
    return s.execute(
        select(K)
        .where(K.c.customer_id == customer_id, K.c.status == KeyStatus.ACTIVE)
        .where((K.c.expires_at.is_(None)) | (K.c.expires_at > now))
        .order_by(K.c.created_at.desc())
    ).first()


def insert_key(s: Tx, row: dict[str, Any]) -> None:
    s.execute(insert(K).values(**row))


def get_key(s: Tx, key_id: str, *, lock: bool = False) -> Any:
    """A key's row; ``lock`` takes its row lock for the transaction (PostgreSQL)."""
    stmt = select(K).where(K.c.id == key_id)
    return s.execute(stmt.with_for_update() if lock else stmt).first()


def replacement_of(s: Tx, key_id: str) -> str | None:
    """The key a rotation of ``key_id`` issued, if any."""
    return s.execute(select(K.c.id).where(K.c.rotated_from == key_id).order_by(K.c.created_at)).scalar()


def set_key(s: Tx, key_id: str, **values: Any) -> None:
    s.execute(update(K).where(K.c.id == key_id).values(**values))


def list_keys(s: Tx, *, customer_id: str | None = None, status: str | None = None) -> list[Any]:
    stmt = select(K).order_by(K.c.created_at)
    if customer_id:
        stmt = stmt.where(K.c.customer_id == customer_id)
    if status:
        stmt = stmt.where(K.c.status == status)
    return list(s.execute(stmt))


def key_for_auth(s: Tx, handle: str) -> Any:
    """What authenticating a key needs, by its public handle (prefix): one indexed read."""
    return s.execute(
        select(
            K.c.id,
            K.c.hash,
            K.c.customer_id,
            K.c.scopes,
            K.c.status,
            K.c.expires_at,
            K.c.ip_allowlist,
            K.c.tools,
            K.c.rate_limit,
            K.c.max_concurrency,
            C.c.status.label("customer_status"),
        )
        .join(C, C.c.id == K.c.customer_id)
        .where(K.c.prefix == handle)
    ).first()


def set_status_of_customer(s: Tx, customer_id: str, status: str, *, only: str) -> list[str]:
    """Every key of ``customer_id`` in status ``only`` moves to ``status``; their ids."""
    ids = [
        r.id
        for r in s.execute(select(K.c.id).where(K.c.customer_id == customer_id, K.c.status == only)).all()
    ]
    if ids:
        s.execute(update(K).where(K.c.id.in_(ids)).values(status=status))
    return ids


# read in every charge's unit of work made with a key (the ledger's per-key spend check): prebuilt
_SPEND_LIMITS = RawStatement(
    select(K.c.spend_limit, K.c.spend_limit_daily, K.c.spend_limit_monthly).where(K.c.id == bindparam("kid"))
)


def spend_limits(s: Tx, key_id: str) -> tuple[int | None, int | None, int | None] | None:
    """A key's (total, daily, monthly) spend limits (each None: none); None when ``key_id`` is
    no API key (a server key's id)."""
    r = _SPEND_LIMITS.first(s, {"kid": key_id})
    if r is None:
        return None
    return r.spend_limit, r.spend_limit_daily, r.spend_limit_monthly
