"""Admin routes of the customers domain."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.customers.schemas import CustomerIn, CustomerPatch

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/customers",
    status_code=201,
    summary="Create a customer (and their wallet)",
    responses=errors(401, 403, 409, 413, 422),
)
def create_customer(body: CustomerIn, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.customers.create(
        body.external_id,
        email=body.email,
        name=body.name,
        metadata=body.metadata,
        plan=body.plan,
        actor=actor,
    )


@router.get("/customers", summary="List customers", responses=errors(401, 422))
def list_customers(
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[str | None, Query(max_length=64)] = None,
    status: Annotated[str | None, Query(max_length=16)] = None,
    q: Annotated[str | None, Query(max_length=255, description="search external id and email")] = None,
    include_anonymous: bool = False,
) -> dict[str, Any]:
    return tk.customers.list(
        limit=limit,
        after=after,
        status=status,
        q=q,
        include_anonymous=include_anonymous,
        max_bytes=tk.settings.list_max_bytes,
    )


@router.get("/customers/{customer_id}", summary="A customer with balance", responses=errors(401, 404))
def get_customer(customer_id: str, tk: Admin) -> dict[str, Any]:
    c = tk.customers.find(customer_id)
    return {**c, "wallet": tk.balance(c["id"])}


@router.patch(
    "/customers/{customer_id}",
    summary="Update email, name, metadata or status",
    responses=errors(401, 403, 404, 413, 422),
)
def patch_customer(customer_id: str, body: CustomerPatch, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.customers.update(customer_id, actor=actor, **body.model_dump(exclude_none=True))
