"""Admin routes of the webhooks domain: endpoints (the secret shown at creation and rotation
only), their deliveries, redelivery and test events."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.webhooks.schemas import EndpointIn, EndpointPatch, RotateIn

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/webhook-endpoints",
    status_code=201,
    summary="Register a webhook endpoint (its signing secret is shown once, here)",
    responses=errors(401, 403, 413, 422),
)
def create_endpoint(body: EndpointIn, tk: Admin, actor: AdminActor) -> JSONResponse:
    out = tk.webhooks.create(body.url, events=body.events, description=body.description, actor=actor)
    return JSONResponse(out, status_code=201)


@router.get("/webhook-endpoints", summary="Webhook endpoints (never their secrets)", responses=errors(401))
def list_endpoints(tk: Admin) -> dict[str, Any]:
    return {"data": tk.webhooks.list(), "next": None, "has_more": False}


@router.get("/webhook-endpoints/{endpoint_id}", summary="A webhook endpoint", responses=errors(401, 404))
def get_endpoint(endpoint_id: str, tk: Admin) -> dict[str, Any]:
    return tk.webhooks.get(endpoint_id)


@router.patch(
    "/webhook-endpoints/{endpoint_id}",
    summary="Change an endpoint's url, events, description, or enable / disable it",
    responses=errors(401, 403, 404, 413, 422),
)
def patch_endpoint(endpoint_id: str, body: EndpointPatch, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.webhooks.update(endpoint_id, body.model_dump(exclude_unset=True), actor=actor)


@router.delete(
    "/webhook-endpoints/{endpoint_id}",
    status_code=204,
    summary="Delete an endpoint, its deliveries and their log",
    responses=errors(401, 403, 404),
)
def delete_endpoint(endpoint_id: str, tk: Admin, actor: AdminActor) -> Response:
    tk.webhooks.remove(endpoint_id, actor=actor)
    return Response(status_code=204)


@router.post(
    "/webhook-endpoints/{endpoint_id}/rotate-secret",
    summary="A new signing secret (shown once, here)",
    responses=errors(401, 403, 404, 413, 422),
)
def rotate_secret(
    endpoint_id: str, tk: Admin, actor: AdminActor, body: RotateIn | None = None
) -> dict[str, Any]:
    overlap = body.overlap_seconds if body is not None else 0
    return tk.webhooks.rotate_secret(endpoint_id, overlap_seconds=overlap, actor=actor)


@router.post(
    "/webhook-endpoints/{endpoint_id}/test",
    summary="Send a webhook.test event to this endpoint now; returns its delivery",
    responses=errors(401, 403, 404, 409),
)
def send_test(endpoint_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.webhooks.send_test(endpoint_id, actor=actor)


@router.get(
    "/webhook-endpoints/{endpoint_id}/deliveries",
    summary="An endpoint's deliveries, newest first, paginated",
    responses=errors(401, 404, 422),
)
def list_deliveries(
    endpoint_id: str,
    tk: Admin,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="the `next` cursor of the last page")
    ] = None,
) -> dict[str, Any]:
    return tk.webhooks.deliveries(endpoint_id, limit=limit, after=after, max_bytes=tk.settings.list_max_bytes)


@router.get(
    "/webhook-deliveries/{delivery_id}",
    summary="A delivery with its attempt log and the body it sends",
    responses=errors(401, 404),
)
def get_delivery(delivery_id: str, tk: Admin) -> dict[str, Any]:
    return tk.webhooks.delivery(delivery_id)


@router.post(
    "/webhook-deliveries/{delivery_id}/redeliver",
    summary="Send a delivery again now, with the same webhook-id",
    responses=errors(401, 403, 404, 409),
)
def redeliver(delivery_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return tk.webhooks.redeliver(delivery_id, actor=actor)
