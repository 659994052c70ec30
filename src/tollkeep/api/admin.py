"""Admin routes (``Authorization: Bearer $TOLLKEEP_ADMIN_TOKEN``): customers, keys, credits, catalog."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import admin
from tollkeep.api.schemas import (
    CustomerIn,
    CustomerPatch,
    ErrorOut,
    GrantIn,
    KeyIn,
    KeyPatch,
    OverdraftIn,
    PlanIn,
    RefundIn,
    RotateIn,
)
from tollkeep.kit.errors import InvalidInput
from tollkeep.runtime import Tollkeep

ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut} for c in (401, 404, 409, 413, 422)}
router = APIRouter(prefix="/admin", tags=["admin"], responses=ERRORS)
Admin = Annotated[Tollkeep, Depends(admin)]


# ---- customers ----------------------------------------------------------------------------------
@router.post("/customers", status_code=201, summary="Create a customer (and their wallet)")
def create_customer(body: CustomerIn, tk: Admin) -> dict[str, Any]:
    return tk.customers.create(
        body.external_id, email=body.email, name=body.name, metadata=body.metadata, plan=body.plan
    )


@router.get("/customers", summary="List customers")
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


@router.get("/customers/{customer_id}", summary="A customer with balance")
def get_customer(customer_id: str, tk: Admin) -> dict[str, Any]:
    c = tk.customers.find(customer_id)
    return {**c, "wallet": tk.balance(c["id"])}


@router.patch("/customers/{customer_id}", summary="Update email, name, metadata or status")
def patch_customer(customer_id: str, body: CustomerPatch, tk: Admin) -> dict[str, Any]:
    return tk.customers.update(customer_id, **body.model_dump(exclude_none=True))


@router.post("/customers/{customer_id}/plan", summary="Move a customer to another plan")
def change_plan(customer_id: str, body: PlanIn, tk: Admin) -> dict[str, Any]:
    return tk.ledger.change_plan(customer_id, body.plan)


@router.post("/customers/{customer_id}/overdraft", summary="Set how far below zero a wallet may go")
def set_overdraft(customer_id: str, body: OverdraftIn, tk: Admin) -> dict[str, Any]:
    return tk.ledger.set_overdraft(customer_id, body.limit)


# ---- credits --------------------------------------------------------------------------------------
@router.post("/customers/{customer_id}/grants", status_code=201, summary="Grant credits (idempotent)")
def grant(customer_id: str, body: GrantIn, tk: Admin) -> JSONResponse:
    if not body.idempotency_key:
        raise InvalidInput(
            "idempotency_key is required: a retried grant with the same key credits once",
            code="invalid_idempotency_key",
        )
    out = tk.ledger.grant(
        customer_id,
        body.amount,
        source=body.source,
        idempotency_key=body.idempotency_key,
        expires_at=body.expires_at,
        effective_at=body.effective_at,
        priority=body.priority,
        meter=body.meter,
        note=body.note,
    )
    return JSONResponse(out, status_code=200 if out["duplicate"] else 201)


@router.get("/customers/{customer_id}/balance", summary="Balance and grants")
def balance(customer_id: str, tk: Admin) -> dict[str, Any]:
    return tk.balance(customer_id)


@router.get("/customers/{customer_id}/ledger", summary="Journal entries, oldest first, paginated")
def ledger(
    customer_id: str,
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the `next` cursor of the last page")
    ] = None,
) -> dict[str, Any]:
    return tk.journal(customer_id, limit=limit, after=after)


@router.get("/customers/{customer_id}/usage", summary="Usage events, newest first")
def usage(
    customer_id: str,
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="the `next` cursor of the last page")
    ] = None,
) -> dict[str, Any]:
    return tk.usage(customer_id, limit=limit, after=after, max_bytes=tk.settings.list_max_bytes)


@router.post("/charges/{event_id}/refund", status_code=201, summary="Refund a charge, whole or in part")
def refund(event_id: str, body: RefundIn, tk: Admin) -> JSONResponse:
    out = tk.ledger.refund(
        event_id, idempotency_key=body.idempotency_key, amount=body.amount, reason=body.reason
    )
    return JSONResponse(out, status_code=200 if out["duplicate"] else 201)


@router.get("/ledger/verify", summary="Recompute every balance from the journal")
def verify(tk: Admin) -> JSONResponse:
    rep = tk.verify()
    return JSONResponse(rep.to_dict(), status_code=200 if rep.ok else 500)


# ---- keys -----------------------------------------------------------------------------------------
@router.post("/customers/{customer_id}/keys", status_code=201, summary="Issue an API key (shown once)")
def create_key(customer_id: str, tk: Admin, body: KeyIn | None = None) -> JSONResponse:
    b = body or KeyIn()
    out = tk.keys.create(
        customer_id,
        name=b.name,
        note=b.note,
        scopes=b.scopes,
        ip_allowlist=b.ip_allowlist,
        expires_at=b.expires_at,
        force_new=b.force_new,
    )
    return JSONResponse(out, status_code=200 if out["reused"] else 201)


@router.get("/customers/{customer_id}/keys", summary="A customer's keys (never their plaintext)")
def customer_keys(customer_id: str, tk: Admin) -> list[dict[str, Any]]:
    return tk.keys.list(customer_id=customer_id)


@router.get("/keys", summary="All keys")
def list_keys(tk: Admin, status: Annotated[str | None, Query(max_length=16)] = None) -> list[dict[str, Any]]:
    return tk.keys.list(status=status)


@router.get("/keys/{key_id}")
def get_key(key_id: str, tk: Admin) -> dict[str, Any]:
    return tk.keys.get(key_id)


@router.patch("/keys/{key_id}", summary="Change scopes, IP allowlist, expiry, name or note")
def patch_key(key_id: str, body: KeyPatch, tk: Admin) -> dict[str, Any]:
    return tk.keys.update(key_id, **body.model_dump(exclude_unset=True))


@router.post("/keys/{key_id}/revoke", summary="Revoke a key for good")
def revoke_key(key_id: str, tk: Admin) -> dict[str, Any]:
    return tk.keys.revoke(key_id)


@router.post("/keys/{key_id}/suspend", summary="Suspend a key (can be resumed)")
def suspend_key(key_id: str, tk: Admin) -> dict[str, Any]:
    return tk.keys.suspend(key_id)


@router.post("/keys/{key_id}/resume", summary="Resume a suspended key")
def resume_key(key_id: str, tk: Admin) -> dict[str, Any]:
    return tk.keys.resume(key_id)


@router.post("/keys/{key_id}/rotate", status_code=201, summary="Issue a replacement key; revoke the old one")
def rotate_key(key_id: str, tk: Admin, body: RotateIn | None = None) -> dict[str, Any]:
    b = body or RotateIn()
    return tk.keys.rotate(key_id, grace_seconds=b.grace_seconds, expires_at=b.expires_at)


# ---- catalog --------------------------------------------------------------------------------------
@router.get("/catalog", summary="The active catalog: version and contents")
def get_catalog(tk: Admin) -> dict[str, Any]:
    cat = tk.catalog
    return {
        "version": cat.version,
        "source": cat.source,
        "versions": tk.catalogs.versions,
        "catalog": cat.to_public_dict(),
    }


@router.post("/catalog/reload", summary="Load the catalog file again (an invalid file changes nothing)")
async def reload_catalog(tk: Admin) -> dict[str, Any]:
    before = tk.catalog.version
    cat = await run_in_threadpool(tk.reload_catalog)
    return {"version": cat.version, "previous": before, "changed": cat.version != before}


@router.post("/sweep", summary="Release expired holds and expire grants now")
def sweep(tk: Admin) -> dict[str, Any]:
    return tk.ledger.sweep()
