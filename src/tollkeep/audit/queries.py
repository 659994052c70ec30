"""Read model of the audit log: newest first, paginated by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tollkeep.audit.models import AuditEntry
from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.pagination import clamp_limit, page

__all__ = ["entries", "entry_view"]

A = table_of(AuditEntry)


def entry_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "at": iso(row.at),
        "actor": {"kind": row.actor_kind, "id": row.actor_id},
        "address": row.address,
        "action": row.action,
        "target": {"kind": row.target_kind, "id": row.target_id},
        "before": row.before,
        "after": row.after,
    }


def entries(
    s: Tx,
    *,
    limit: int | None = None,
    before_id: int | None = None,
    action: str | None = None,
    actor_id: str | None = None,
    target_id: str | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Newest first; ``next`` is the id to pass as ``before`` for the following page."""
    n = clamp_limit(limit)
    stmt = select(A).order_by(A.c.id.desc()).limit(n + 1)
    if before_id is not None:
        stmt = stmt.where(A.c.id < before_id)
    if action:
        stmt = stmt.where(A.c.action == action)
    if actor_id:
        stmt = stmt.where(A.c.actor_id == actor_id)
    if target_id:
        stmt = stmt.where(A.c.target_id == target_id)
    rows = [entry_view(r) for r in s.execute(stmt)]
    out = page(rows, n, max_bytes=max_bytes)
    return out
