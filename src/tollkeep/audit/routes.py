"""Admin route of the audit domain: the log, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tollkeep.api.deps import AdminRead, errors
from tollkeep.audit import queries

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/audit", summary="The audit log: admin actions, newest first, paginated", responses=errors(401, 422)
)
def list_audit(
    tk: AdminRead,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the `next` cursor of the last page")
    ] = None,
    action: Annotated[str | None, Query(max_length=64, description="e.g. grant.create")] = None,
    actor: Annotated[str | None, Query(max_length=64, description="an admin token or server key id")] = None,
    target: Annotated[str | None, Query(max_length=64, description="e.g. a customer id")] = None,
) -> dict[str, Any]:
    with tk.db.scope(write=False) as s:
        return queries.entries(
            s,
            limit=limit,
            before_id=before,
            action=action,
            actor_id=actor,
            target_id=target,
            max_bytes=tk.settings.list_max_bytes,
        )
