"""Public routes, called by buyers (people and agents) with an API key or an install id."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import count_write, parse_body, principal, properties, runtime
from tollkeep.api.schemas import ErrorOut, HoldIn, SettleIn, UsageIn, UsageOut
from tollkeep.keys.service import Principal
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

router = APIRouter(prefix="/v1", tags=["public"])
Caller = Annotated[Principal, Depends(principal)]
Runtime = Annotated[Tollkeep, Depends(runtime)]
ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut} for c in (401, 402, 403, 409, 413, 422, 429)
}


@router.get("/balance", summary="The caller's balance, grants and holds")
def get_balance(caller: Caller, tk: Runtime) -> dict[str, Any]:
    caller.require("balance:read")
    return tk.balance(caller.customer_id)


@router.post(
    "/usage",
    summary="Record a metered event and charge for it (idempotent)",
    response_model=UsageOut,
    responses=ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": UsageIn.model_json_schema()}},
        },
        "security": [{"APIKey": []}],
    },
)
async def post_usage(request: Request) -> JSONResponse:
    # The hottest route: served by api.middleware.HotRoutes ahead of the router (this FastAPI route
    # documents it and serves it when mounted without that middleware). No dependencies; the
    # body is parsed and validated by pydantic-core in one step.
    tk: Tollkeep = request.app.state.tollkeep
    caller = await principal(request)
    caller.require("usage:write")
    count_write(request, caller)
    body = parse_body(UsageIn, await request.body())
    req = UsageRequest(
        customer_id=caller.customer_id,
        meter=body.meter,
        quantity=body.quantity,
        idempotency_key=body.idempotency_key,
        properties=properties(tk, body.properties),
        api_key_id=caller.key_id,
    )
    return JSONResponse(await tk.ledger.arecord_usage(req))


@router.get("/usage", summary="The caller's own usage events, newest first")
def list_usage(
    caller: Caller,
    tk: Runtime,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="the `next` cursor of the last page")
    ] = None,
    meter: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    caller.require("usage:read")
    return tk.usage(
        caller.customer_id, limit=limit, after=after, meter=meter, max_bytes=tk.settings.list_max_bytes
    )


@router.post(
    "/holds",
    status_code=201,
    summary="Reserve credits before work whose cost is known later",
    responses=ERRORS,
)
async def create_hold(request: Request, body: HoldIn, caller: Caller, tk: Runtime) -> JSONResponse:
    caller.require("holds:write")
    count_write(request, caller)
    fn = tk.ledger.hold_fn(
        caller.customer_id,
        idempotency_key=body.idempotency_key,
        amount=body.amount,
        meter=body.meter,
        quantity=body.quantity,
        properties=properties(tk, body.properties),
        ttl_seconds=body.ttl_seconds,
        api_key_id=caller.key_id,
    )
    out = await tk.executor.acall(fn, key=caller.customer_id)
    return JSONResponse(out, status_code=200 if out.get("duplicate") else 201)


@router.get("/holds/{hold_id}", summary="A hold of the caller's: amount, status, expiry", responses=ERRORS)
def get_hold(hold_id: str, caller: Caller, tk: Runtime) -> dict[str, Any]:
    caller.require("balance:read")
    return tk.hold(caller.customer_id, hold_id)


@router.post(
    "/holds/{hold_id}/settle", summary="Charge a hold for the actual amount or quantity", responses=ERRORS
)
async def settle_hold(
    request: Request, hold_id: str, body: SettleIn, caller: Caller, tk: Runtime
) -> JSONResponse:
    caller.require("holds:write")
    count_write(request, caller)
    fn = tk.ledger.resolve_fn(
        caller.customer_id,
        hold_id,
        action="settle",
        amount=body.amount,
        quantity=body.quantity,
        properties=properties(tk, body.properties),
    )
    return JSONResponse(await tk.executor.acall(fn, key=caller.customer_id))


@router.post(
    "/holds/{hold_id}/release", summary="Give a hold's credits back without charging", responses=ERRORS
)
async def release_hold(request: Request, hold_id: str, caller: Caller, tk: Runtime) -> JSONResponse:
    caller.require("holds:write")
    count_write(request, caller)
    fn = tk.ledger.resolve_fn(caller.customer_id, hold_id, action="release")
    return JSONResponse(await tk.executor.acall(fn, key=caller.customer_id))


@router.get("/pricing", summary="Meters, prices and plans of the active catalog (pricing discovery)")
async def pricing(tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.catalog.to_public_dict())
