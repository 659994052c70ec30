"""Admin routes of the operators domain: server keys and admin tokens (shown once)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.operators.schemas import AdminTokenIn, ServerKeyIn

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/server-keys",
    status_code=201,
    summary="Issue a server key (tk_sk_…, shown once)",
    responses=errors(401, 403, 413, 422),
)
def create_server_key(body: ServerKeyIn, tk: Admin, actor: AdminActor) -> JSONResponse:
    out = tk.operators.create_server_key(body.name, body.scopes, actor=actor)
    return JSONResponse(out, status_code=201)


@router.get("/server-keys", summary="Server keys (never their plaintext)", responses=errors(401))
def list_server_keys(tk: Admin) -> list[dict[str, Any]]:
    return tk.operators.list("server")


@router.post(
    "/server-keys/{key_id}/revoke",
    summary="Revoke a server key for good",
    responses=errors(401, 403, 404, 409),
)
def revoke_server_key(key_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.operators.revoke("server", key_id, actor=actor)


@router.post(
    "/admin-tokens",
    status_code=201,
    summary="Issue an admin token (tka_…, shown once) with a role",
    responses=errors(401, 403, 413, 422),
)
def create_admin_token(body: AdminTokenIn, tk: Admin, actor: AdminActor) -> JSONResponse:
    out = tk.operators.create_admin_token(body.name, body.role, actor=actor)
    return JSONResponse(out, status_code=201)


@router.get("/admin-tokens", summary="Admin tokens (never their plaintext)", responses=errors(401))
def list_admin_tokens(tk: Admin) -> list[dict[str, Any]]:
    return tk.operators.list("admin")


@router.post(
    "/admin-tokens/{token_id}/revoke",
    summary="Revoke an admin token for good",
    responses=errors(401, 403, 404, 409),
)
def revoke_admin_token(token_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.operators.revoke("admin", token_id, actor=actor)
