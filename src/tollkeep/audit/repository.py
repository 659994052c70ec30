"""The audit domain's SQL: ``audit_log`` is written here, by insert only."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import insert

from tollkeep.audit.models import AuditEntry
from tollkeep.kit.actor import Actor
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of

__all__ = ["record"]

A = table_of(AuditEntry)


def _plain(value: dict[str, Any] | None) -> dict[str, Any] | None:
    # JSON-safe copy (datetimes, Decimals as text): what is stored is what was seen
    return None if value is None else json.loads(json.dumps(value, default=str))


def record(
    s: Tx,
    actor: Actor,
    action: str,
    target: tuple[str, str | None],
    *,
    at: datetime,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Write one audit entry in the caller's transaction: it exists if and only if the change
    it describes was committed."""
    s.execute(
        insert(A).values(
            at=at,
            actor_kind=actor.kind,
            actor_id=actor.id,
            address=actor.address,
            action=action,
            target_kind=target[0],
            target_id=target[1],
            before=_plain(before),
            after=_plain(after),
        )
    )
