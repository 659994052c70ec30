"""Admin routes of the plans domain."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.plans.schemas import PlanIn

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/customers/{customer_id}/plan",
    summary="Move a customer to another plan",
    responses=errors(401, 403, 404, 413, 422),
)
def change_plan(customer_id: str, body: PlanIn, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.plans.change_plan(customer_id, body.plan, actor=actor)
