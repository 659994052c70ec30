"""Routes of licensing: the app's calls (validate, activate, deactivate, check in, recover, the
public keys) authorized by the licence key itself, and the operators' admin routes."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, AdminActor, Runtime, errors
from tollkeep.licensing.schemas import LicenseCreate, LicenseKeyIn, LicenseUpdate, MachineIn, RecoverIn
from tollkeep.licensing.service import UNSET

public_router = APIRouter(prefix="/v1/licenses", tags=["licenses"])
admin_router = APIRouter(prefix="/admin/licenses", tags=["admin"])


@public_router.get("/jwks", summary="The public keys licences are signed with (a JWKS of Ed25519 keys)")
async def jwks(tk: Runtime) -> JSONResponse:
    body = await run_in_threadpool(tk.licenses.jwks)
    return JSONResponse(body, headers={"Cache-Control": "public, max-age=300"})


@public_router.get("/revoked", summary="The revocation list: ids of revoked licences")
async def revoked(tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(tk.licenses.revoked)


@public_router.post(
    "/validate",
    summary="Online check of a licence key: valid or not (with a code), current entitlements",
    responses=errors(413, 422),
)
async def validate(body: LicenseKeyIn, tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(tk.licenses.validate, body.key, body.fingerprint)


@public_router.post(
    "/activate",
    status_code=201,
    summary="Activate a machine on a licence (200 if it already was); 409 beyond max_machines",
    responses=errors(403, 409, 413, 422),
)
async def activate(body: MachineIn, tk: Runtime) -> JSONResponse:
    created, out = await run_in_threadpool(
        lambda: tk.licenses.activate(body.key, body.fingerprint, name=body.name)
    )
    return JSONResponse(out, status_code=201 if created else 200)


@public_router.post(
    "/deactivate",
    summary="Deactivate a machine: its seat is free for another",
    responses=errors(403, 404, 413, 422),
)
async def deactivate(body: MachineIn, tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(tk.licenses.deactivate, body.key, body.fingerprint)


@public_router.post(
    "/checkin",
    summary="Heartbeat of an activated machine: keeps its seat for the licence's grace",
    responses=errors(403, 404, 413, 422),
)
async def checkin(body: MachineIn, tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(tk.licenses.checkin, body.key, body.fingerprint)


@public_router.post(
    "/recover",
    status_code=202,
    summary="Recover lost licence keys: re-issued (same ids) to the seller's webhook for that email",
    responses=errors(413, 422),
)
async def recover(body: RecoverIn, tk: Runtime) -> dict[str, Any]:
    await run_in_threadpool(tk.licenses.recover, body.email)
    return {"status": "accepted", "message": "if licences exist for this email, they are on their way"}


@admin_router.post(
    "", status_code=201, summary="Issue a licence (the key is returned)", responses=errors(401, 403, 404, 422)
)
async def create_license(body: LicenseCreate, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    machines = body.max_machines if "max_machines" in body.model_fields_set else UNSET

    def fn() -> dict[str, Any]:
        return tk.licenses.issue(
            body.customer_id,
            body.plan,
            max_machines=machines,
            expires_at=body.expires_at,
            grace_seconds=body.grace_seconds,
            note=body.note,
            actor=actor,
        )

    return await run_in_threadpool(fn)


@admin_router.get("", summary="Licences, newest first", responses=errors(401))
async def list_licenses(
    tk: Admin, customer_id: str | None = None, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    rows = await run_in_threadpool(
        lambda: tk.licenses.list(customer_id=customer_id, status=status, limit=limit)
    )
    return {"data": rows}


@admin_router.post(
    "/rotate-key", summary="Rotate the signing key (old keys stay in the JWKS)", responses=errors(401, 403)
)
async def rotate_key(tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.licenses.rotate_key(actor=actor))


@admin_router.get("/{license_id}", summary="A licence and its machines", responses=errors(401, 404))
async def show_license(license_id: str, tk: Admin) -> dict[str, Any]:
    return await run_in_threadpool(tk.licenses.get, license_id)


@admin_router.patch(
    "/{license_id}",
    summary="New terms on the same licence id (re-issued key returned)",
    responses=errors(401, 403, 404, 409, 422),
)
async def update_license(
    license_id: str, body: LicenseUpdate, tk: Admin, actor: AdminActor
) -> dict[str, Any]:
    given = body.model_fields_set

    def fn() -> dict[str, Any]:
        return tk.licenses.update(
            license_id,
            plan=body.plan,
            max_machines=body.max_machines if "max_machines" in given else UNSET,
            expires_at=body.expires_at if "expires_at" in given else UNSET,
            actor=actor,
        )

    return await run_in_threadpool(fn)


@admin_router.post("/{license_id}/revoke", summary="Revoke a licence", responses=errors(401, 403, 404))
async def revoke_license(license_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.licenses.revoke(license_id, actor=actor))
