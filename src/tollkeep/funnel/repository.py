"""All of the funnel's SQL writes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from tollkeep.funnel.models import FunnelCursor, FunnelEvent
from tollkeep.kit.db import Tx
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of

__all__ = ["get_cursor", "record", "set_cursor"]

F = table_of(FunnelEvent)
C = table_of(FunnelCursor)


def _insert(s: Tx):  # type: ignore[no-untyped-def]
    return pg_insert if s.get_bind().dialect.name == "postgresql" else sqlite_insert


def record(
    s: Tx, customer_id: str, stage: str, *, source: str | None, provider: str | None, at: datetime
) -> bool:
    """The customer's first time at ``stage`` (a later one changes nothing): True if it was."""
    res = s.execute(
        _insert(s)(F)
        .values(
            id=new_id("fnl"), customer_id=customer_id, stage=stage, source=source, provider=provider, at=at
        )
        .on_conflict_do_nothing()
    )
    return int(res.rowcount) == 1  # type: ignore[attr-defined]


def get_cursor(s: Tx, name: str) -> str:
    return str(s.execute(select(C.c.position).where(C.c.name == name)).scalar_one_or_none() or "")


def set_cursor(s: Tx, name: str, position: str) -> None:
    if s.execute(update(C).where(C.c.name == name).values(position=position)).rowcount == 0:  # type: ignore[attr-defined]
        s.execute(_insert(s)(C).values(name=name, position=position).on_conflict_do_nothing())
