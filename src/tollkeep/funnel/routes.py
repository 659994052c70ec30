"""Admin route of the funnel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, errors
from tollkeep.kit.errors import InvalidInput

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get(
    "/funnel",
    summary="Customers per stage (acquisition → activation → paid) and conversion rates",
    responses=errors(401, 422),
)
async def funnel(tk: Admin, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(
                f"{name} needs a timezone (e.g. 2026-01-01T00:00:00Z)", code="invalid_timestamp"
            )
    return await run_in_threadpool(lambda: tk.funnel.report(since=since, until=until))
