"""The operators domain's SQL: ``operator_keys`` is written here and nowhere else."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update

from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.operators.models import OperatorKey

__all__ = ["by_handle", "get", "insert_key", "list_keys", "set_key"]

K = table_of(OperatorKey)


def insert_key(s: Tx, row: dict[str, Any]) -> None:
    s.execute(insert(K).values(**row))


def get(s: Tx, key_id: str, *, kind: str | None = None) -> Any:
    stmt = select(K).where(K.c.id == key_id)
    if kind is not None:
        stmt = stmt.where(K.c.kind == kind)
    return s.execute(stmt).first()


def by_handle(s: Tx, handle: str) -> Any:
    return s.execute(select(K).where(K.c.prefix == handle)).first()


def list_keys(s: Tx, kind: str) -> list[Any]:
    return list(s.execute(select(K).where(K.c.kind == kind).order_by(K.c.created_at)))


def set_key(s: Tx, key_id: str, **values: Any) -> None:
    s.execute(update(K).where(K.c.id == key_id).values(**values))
