"""All of the gateway's SQL (the ``gateway_calls`` table)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select, update

from tollkeep.gateway.models import GatewayCall
from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of

__all__ = ["find_call", "insert_call", "update_call"]

T = table_of(GatewayCall)


def find_call(s: Any, customer_id: str, idempotency_key: str) -> Any:
    """The call of ``customer_id`` with this key, or None (a read or a write session)."""
    return s.execute(
        select(T).where(T.c.customer_id == customer_id, T.c.idempotency_key == idempotency_key)
    ).first()


def insert_call(
    s: Tx,
    *,
    customer_id: str,
    idempotency_key: str,
    request_hash: str,
    target: str,
    expires_at: datetime,
    now: datetime,
) -> str:
    call_id = new_id("gwc")
    s.execute(
        T.insert().values(
            id=call_id,
            customer_id=customer_id,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            target=target,
            status="pending",
            attempt=1,
            hold_id=None,
            charged=0,
            result=None,
            expires_at=expires_at,
            created_at=now,
            updated_at=now,
        )
    )
    return call_id


def update_call(s: Tx, call_id: str, **values: Any) -> None:
    s.execute(update(T).where(T.c.id == call_id).values(**values))
