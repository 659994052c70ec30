"""Routes of the ledger: the caller's balance, usage and holds (public), and the admin's
grants, refunds, journal, verification and sweep."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import (
    Admin,
    AdminActor,
    AnyCaller,
    Caller,
    Runtime,
    ServerCaller,
    acount_write,
    customer_for,
    errors,
    parse_body,
    principal,
    properties,
    server_only,
)
from tollkeep.kit.errors import AuthError, CapExceeded, Forbidden, InsufficientCredits, InvalidInput
from tollkeep.ledger.requests import UsageRequest
from tollkeep.ledger.schemas import (
    BalanceOut,
    ExtendIn,
    GrantIn,
    GrantOut,
    HoldIn,
    HoldOut,
    HoldResolutionOut,
    JournalPageOut,
    KeyVerifyIn,
    KeyVerifyOut,
    OverdraftIn,
    OverdraftOut,
    RefundIn,
    RefundOut,
    SettleIn,
    SweepOut,
    UsageIn,
    UsageOut,
    UsagePageOut,
)
from tollkeep.runtime import Tollkeep

router = APIRouter(prefix="/v1", tags=["public"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])
# Each route names its answer (``response_model``: the documented schema) and the errors it really
# gives. Routes return their JSON as a JSONResponse, so FastAPI never re-validates or filters it:
# the schemas describe the answers exactly (tests/api/test_response_schemas.py checks real ones).
CHARGE_ERRORS = errors(401, 402, 403, 404, 409, 413, 422, 429)


# ---- public: a buyer's own wallet (API key), or any customer's (server key) ---------------
@router.get(
    "/balance",
    summary="The balance, grants and holds of the caller (or, with a server key, of customer_id)",
    response_model=BalanceOut,
    responses=errors(401, 403, 404, 422),
)
async def get_balance(
    caller: Caller,
    tk: Runtime,
    customer_id: Annotated[str | None, Query(max_length=40, description="with a server key")] = None,
) -> JSONResponse:
    caller.require("balance:read")
    cid = customer_for(caller, customer_id)
    return JSONResponse(await run_in_threadpool(tk.balance, cid))


@router.post(
    "/usage",
    summary="Record a metered event and charge for it (idempotent)",
    response_model=UsageOut,
    responses=CHARGE_ERRORS,
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": UsageIn.model_json_schema()}},
        },
    },
)
async def post_usage(request: Request) -> JSONResponse:
    # The hottest route: served by api.middleware.HotRoutes ahead of the router (this FastAPI route
    # documents it and serves it when mounted without that middleware). No dependencies; the
    # body is parsed and validated by pydantic-core in one step.
    tk: Tollkeep = request.app.state.tollkeep
    caller = await principal(request)
    caller.require("usage:write")
    body = parse_body(UsageIn, await request.body())
    cid = customer_for(caller, body.customer_id)
    await acount_write(request, cid)
    req = UsageRequest(
        customer_id=cid,
        meter=body.meter,
        quantity=body.quantity,
        idempotency_key=body.idempotency_key,
        properties=properties(tk, body.properties),
        api_key_id=caller.key_id,
    )
    async with tk.limits.admit(caller, "route:POST /v1/usage") as permit:
        out = await tk.ledger.arecord_usage(req)
    return JSONResponse(out, headers=tk.limits.headers(permit))


@router.get(
    "/usage",
    summary="Usage events of the caller (or, with a server key, of customer_id), newest first",
    response_model=UsagePageOut,
    responses=errors(401, 403, 422),
)
def list_usage(
    caller: Caller,
    tk: Runtime,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="the `next` cursor of the last page")
    ] = None,
    meter: Annotated[str | None, Query(max_length=64)] = None,
    customer_id: Annotated[str | None, Query(max_length=40, description="with a server key")] = None,
) -> JSONResponse:
    caller.require("usage:read")
    cid = customer_for(caller, customer_id)
    page = tk.usage(cid, limit=limit, after=after, meter=meter, max_bytes=tk.settings.list_max_bytes)
    return JSONResponse(page)


@router.post(
    "/holds",
    status_code=201,
    summary="Reserve credits before work whose cost is known later (200 with duplicate: a replay)",
    response_model=HoldOut,
    responses=CHARGE_ERRORS,
)
async def create_hold(request: Request, body: HoldIn, caller: Caller, tk: Runtime) -> JSONResponse:
    caller.require("holds:write")
    cid = customer_for(caller, body.customer_id)
    await acount_write(request, cid)
    server = isinstance(caller, ServerCaller)
    cmd = tk.ledger.hold_fn(
        cid,
        idempotency_key=body.idempotency_key,
        amount=body.amount,
        meter=body.meter,
        quantity=body.quantity,
        properties=properties(tk, body.properties),
        ttl_seconds=body.ttl_seconds,
        api_key_id=caller.key_id,
        opened_by=f"server:{caller.key_id}" if server else None,
    )
    async with tk.limits.admit(caller, "route:POST /v1/holds") as permit:
        out = await tk.executor.acall(cmd)
    headers = tk.limits.headers(permit)
    return JSONResponse(out, status_code=200 if out.get("duplicate") else 201, headers=headers)


@router.get(
    "/holds/{hold_id}",
    summary="A hold: amount, status, expiry",
    response_model=HoldOut,
    responses=errors(401, 403, 404),
)
def get_hold(hold_id: str, caller: Caller, tk: Runtime) -> JSONResponse:
    caller.require("balance:read")
    return JSONResponse(tk.hold(None if isinstance(caller, ServerCaller) else caller.customer_id, hold_id))


def _resolver(caller: AnyCaller) -> tuple[str | None, bool]:
    """(the customer whose holds the caller may resolve: None for any, is it a server key)."""
    if isinstance(caller, ServerCaller):
        return None, True
    return caller.customer_id, False


@router.post(
    "/holds/{hold_id}/settle",
    summary="Charge a hold for the actual amount or quantity (a server key's hold: a server key only)",
    response_model=HoldResolutionOut,
    responses=CHARGE_ERRORS,
)
async def settle_hold(
    request: Request, hold_id: str, body: SettleIn, caller: Caller, tk: Runtime
) -> JSONResponse:
    caller.require("holds:write")
    cid, server = _resolver(caller)
    cmd = await run_in_threadpool(
        tk.ledger.resolve_fn,
        cid,
        hold_id,
        action="settle",
        amount=body.amount,
        quantity=body.quantity,
        properties=properties(tk, body.properties),
        by_server=server,
    )
    await acount_write(request, cmd.key or hold_id)
    async with tk.limits.admit(caller, "route:POST /v1/holds/{hold_id}/settle") as permit:
        out = await tk.executor.acall(cmd)
    return JSONResponse(out, headers=tk.limits.headers(permit))


@router.post(
    "/holds/{hold_id}/release",
    summary="Give a hold's credits back without charging (a server key's hold: a server key only)",
    response_model=HoldResolutionOut,
    responses=errors(401, 403, 404, 409, 429),
)
async def release_hold(request: Request, hold_id: str, caller: Caller, tk: Runtime) -> JSONResponse:
    caller.require("holds:write")
    cid, server = _resolver(caller)
    cmd = await run_in_threadpool(tk.ledger.resolve_fn, cid, hold_id, action="release", by_server=server)
    await acount_write(request, cmd.key or hold_id)
    async with tk.limits.admit(caller, "route:POST /v1/holds/{hold_id}/release") as permit:
        out = await tk.executor.acall(cmd)
    return JSONResponse(out, headers=tk.limits.headers(permit))


@router.post(
    "/holds/{hold_id}/extend",
    summary="Keep an open hold longer, ttl_seconds from now (a server key's hold: a server key only)",
    response_model=HoldOut,
    responses=errors(401, 403, 404, 409, 413, 422, 429),
)
async def extend_hold(
    request: Request, hold_id: str, body: ExtendIn, caller: Caller, tk: Runtime
) -> JSONResponse:
    caller.require("holds:write")
    cid, server = _resolver(caller)
    cmd = await run_in_threadpool(
        tk.ledger.extend_fn, cid, hold_id, ttl_seconds=body.ttl_seconds, by_server=server
    )
    await acount_write(request, cmd.key or hold_id)
    async with tk.limits.admit(caller, "route:POST /v1/holds/{hold_id}/extend") as permit:
        out = await tk.executor.acall(cmd)
    return JSONResponse(out, headers=tk.limits.headers(permit))


@router.post(
    "/keys/verify",
    summary="Server keys: check a buyer's API key and (optionally) charge it, in one round trip",
    response_model=KeyVerifyOut,
    responses=errors(401, 403, 409, 413, 422, 429),
)
async def verify_key(request: Request, body: KeyVerifyIn, caller: Caller, tk: Runtime) -> JSONResponse:
    return JSONResponse(await _verify_key(request, body, caller, tk))


async def _verify_key(request: Request, body: KeyVerifyIn, caller: Caller, tk: Runtime) -> dict[str, Any]:
    """An invalid buyer key (unknown, revoked, suspended, expired, wrong address, customer not
    active) is ``valid: false`` with its ``code`` — never a 401 of the server key — and nothing
    is charged. A valid key that cannot pay (``insufficient_credits``, ``cap_exceeded``) is
    ``valid: false`` with that code and the balance; nothing is charged either."""
    server = server_only(caller)
    server.require("keys:verify")
    if body.charge is not None:
        server.require("usage:write")
    keys = tk.keys
    try:
        if not keys.well_formed(body.key):
            raise AuthError("invalid API key", code="invalid_api_key")
        rec = keys.cached(body.key) or await run_in_threadpool(keys.lookup, body.key)
        buyer = keys.check(body.key, rec, body.ip)
    except (AuthError, Forbidden) as exc:
        # charged: null when no charge was asked for, else what was charged (0: refused)
        charged = None if body.charge is None else 0
        return {"valid": False, "code": exc.code, "customer_id": None, "balance": None, "charged": charged}
    cid = buyer.customer_id
    if body.charge is None:
        wallet = await run_in_threadpool(tk.balance, cid)
        return {
            "valid": True,
            "code": None,
            "customer_id": cid,
            "balance": wallet["balance"],
            "charged": None,
        }
    charge = body.charge
    if charge.customer_id is not None and charge.customer_id != cid:
        raise Forbidden("the charge names another customer than the key's", code="customer_mismatch")
    await acount_write(request, cid)
    req = UsageRequest(
        customer_id=cid,
        meter=charge.meter,
        quantity=charge.quantity,
        idempotency_key=charge.idempotency_key,
        properties=properties(tk, charge.properties),
        api_key_id=buyer.key_id,
    )
    try:
        out = await tk.ledger.arecord_usage(req)
    except (InsufficientCredits, CapExceeded) as exc:  # and key_spend_limit (a 402 too)
        wallet = await run_in_threadpool(tk.balance, cid)
        return {
            "valid": False,
            "code": exc.code,
            "customer_id": cid,
            "balance": wallet["balance"],
            "charged": 0,
            "details": exc.details,
        }
    return {
        "valid": True,
        "code": None,
        "customer_id": cid,
        "balance": out["balance"],
        "charged": out["charged"],
        "charge": out,
    }


# ---- admin --------------------------------------------------------------------------------
@admin_router.post(
    "/customers/{customer_id}/overdraft",
    summary="Set how far below zero a wallet may go",
    response_model=OverdraftOut,
    responses=errors(401, 403, 404, 413, 422),
)
def set_overdraft(customer_id: str, body: OverdraftIn, tk: Admin, actor: AdminActor) -> JSONResponse:
    return JSONResponse(tk.ledger.set_overdraft(customer_id, body.limit, actor=actor))


@admin_router.post(
    "/customers/{customer_id}/grants",
    status_code=201,
    summary="Grant credits (idempotent: 200 with duplicate on a replay)",
    response_model=GrantOut,
    responses=errors(401, 403, 404, 409, 413, 422),
)
def grant(customer_id: str, body: GrantIn, tk: Admin, actor: AdminActor) -> JSONResponse:
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
        actor=actor,
    )
    return JSONResponse(out, status_code=200 if out["duplicate"] else 201)


@admin_router.get(
    "/customers/{customer_id}/balance",
    summary="Balance and grants",
    response_model=BalanceOut,
    responses=errors(401, 404),
)
def balance(customer_id: str, tk: Admin) -> JSONResponse:
    return JSONResponse(tk.balance(customer_id))


@admin_router.get(
    "/customers/{customer_id}/ledger",
    summary="Journal entries, oldest first, paginated",
    response_model=JournalPageOut,
    responses=errors(401, 404, 422),
)
def ledger(
    customer_id: str,
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    after: Annotated[
        int | None, Query(ge=0, le=2**63 - 1, description="the `next` cursor of the last page")
    ] = None,
) -> JSONResponse:
    return JSONResponse(tk.journal(customer_id, limit=limit, after=after))


@admin_router.get(
    "/customers/{customer_id}/usage",
    summary="Usage events, newest first",
    response_model=UsagePageOut,
    responses=errors(401, 422),
)
def usage(
    customer_id: str,
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="the `next` cursor of the last page")
    ] = None,
) -> JSONResponse:
    return JSONResponse(tk.usage(customer_id, limit=limit, after=after, max_bytes=tk.settings.list_max_bytes))


@admin_router.post(
    "/charges/{event_id}/refund",
    status_code=201,
    summary="Refund a charge, whole or in part (200 with duplicate on a replay)",
    response_model=RefundOut,
    responses=errors(401, 403, 404, 409, 413, 422),
)
def refund(event_id: str, body: RefundIn, tk: Admin, actor: AdminActor) -> JSONResponse:
    out = tk.ledger.refund(
        event_id, idempotency_key=body.idempotency_key, amount=body.amount, reason=body.reason, actor=actor
    )
    return JSONResponse(out, status_code=200 if out["duplicate"] else 201)


@admin_router.get(
    "/ledger/verify",
    summary="Recompute every balance from the journal (500: it found a problem)",
    responses=errors(401),
)
def verify(tk: Admin) -> JSONResponse:
    rep = tk.verify()
    return JSONResponse(rep.to_dict(), status_code=200 if rep.ok else 500)


@admin_router.post(
    "/sweep",
    summary="Release expired holds and expire grants now",
    response_model=SweepOut,
    responses=errors(401, 403),
)
def sweep(tk: Admin, actor: AdminActor) -> JSONResponse:
    return JSONResponse(tk.ledger.sweep(actor=actor))


# served ahead of the router by api.middleware.HotRoutes (see post_usage)
HOT_ROUTES = {("POST", "/v1/usage"): post_usage}
