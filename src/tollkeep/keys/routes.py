"""Admin routes of the keys domain (keys are shown once, at creation)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.keys import LIMIT_FIELDS
from tollkeep.keys.schemas import KeyIn, KeyPatch, RotateIn

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/customers/{customer_id}/keys",
    status_code=201,
    summary="Issue an API key (shown once)",
    responses=errors(401, 403, 404, 413, 422),
)
def create_key(customer_id: str, tk: Admin, actor: AdminActor, body: KeyIn | None = None) -> JSONResponse:
    b = body or KeyIn()
    out = tk.keys.create(
        customer_id,
        name=b.name,
        note=b.note,
        scopes=b.scopes,
        ip_allowlist=b.ip_allowlist,
        expires_at=b.expires_at,
        force_new=b.force_new,
        actor=actor,
        limits=b.model_dump(include=set(LIMIT_FIELDS), exclude_unset=True),
    )
    return JSONResponse(out, status_code=200 if out["reused"] else 201)


@router.get(
    "/customers/{customer_id}/keys",
    summary="A customer's keys (never their plaintext)",
    responses=errors(401),
)
def customer_keys(customer_id: str, tk: Admin) -> list[dict[str, Any]]:
    return tk.keys.list(customer_id=customer_id)


@router.get("/keys", summary="All keys", responses=errors(401, 422))
def list_keys(tk: Admin, status: Annotated[str | None, Query(max_length=16)] = None) -> list[dict[str, Any]]:
    return tk.keys.list(status=status)


@router.get(
    "/keys/{key_id}",
    summary="A key, with what it has spent and holds against its spend limits",
    responses=errors(401, 404),
)
def get_key(key_id: str, tk: Admin) -> dict[str, Any]:
    # ``spend``: total, this UTC month, today; each {spent, held} (open holds count)
    return {**tk.keys.get(key_id), "spend": tk.ledger.key_spend(key_id)}


@router.patch(
    "/keys/{key_id}",
    summary="Change scopes, IP allowlist, expiry, name, note or limits (null clears a limit)",
    responses=errors(401, 403, 404, 413, 422),
)
def patch_key(key_id: str, body: KeyPatch, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.keys.update(key_id, actor=actor, **body.model_dump(exclude_unset=True))


@router.post("/keys/{key_id}/revoke", summary="Revoke a key for good", responses=errors(401, 403, 404, 409))
def revoke_key(key_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.keys.revoke(key_id, actor=actor)


@router.post(
    "/keys/{key_id}/suspend", summary="Suspend a key (can be resumed)", responses=errors(401, 403, 404, 409)
)
def suspend_key(key_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.keys.suspend(key_id, actor=actor)


@router.post("/keys/{key_id}/resume", summary="Resume a suspended key", responses=errors(401, 403, 404, 409))
def resume_key(key_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.keys.resume(key_id, actor=actor)


@router.post(
    "/keys/{key_id}/rotate",
    status_code=201,
    summary="Issue a replacement key; revoke the old one",
    responses=errors(401, 403, 404, 409, 413, 422),
)
def rotate_key(key_id: str, tk: Admin, actor: AdminActor, body: RotateIn | None = None) -> dict[str, Any]:
    b = body or RotateIn()
    return tk.keys.rotate(key_id, grace_seconds=b.grace_seconds, expires_at=b.expires_at, actor=actor)
