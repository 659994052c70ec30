"""Routes of the catalog domain: public pricing discovery, admin view and reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, AdminActor, Runtime, errors

admin_router = APIRouter(prefix="/admin", tags=["admin"])
public_router = APIRouter(prefix="/v1", tags=["public"])


@admin_router.get("/catalog", summary="The active catalog: version and contents", responses=errors(401))
def get_catalog(tk: Admin) -> dict[str, Any]:
    cat = tk.catalog
    return {
        "version": cat.version,
        "source": cat.source,
        "versions": tk.catalogs.versions,
        "catalog": cat.to_public_dict(),
    }


@admin_router.post(
    "/catalog/reload",
    summary="Load the catalog file again (an invalid file changes nothing)",
    responses=errors(401, 403, 422),
)
async def reload_catalog(tk: Admin, actor: AdminActor) -> dict[str, Any]:
    before = tk.catalog.version
    cat = await run_in_threadpool(lambda: tk.reload_catalog(actor=actor))
    return {"version": cat.version, "previous": before, "changed": cat.version != before}


@public_router.get("/pricing", summary="Meters, prices and plans of the active catalog (pricing discovery)")
async def pricing(tk: Runtime) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.catalog.to_public_dict())
