"""Routes of the payments domain: provider webhooks (store first), checkout, the local pay page,
and the operators' inbox."""

from __future__ import annotations

import html
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, AdminActor, MaybeCaller, Runtime, ServerCaller, errors
from tollkeep.audit import record
from tollkeep.kit.errors import AuthError, InvalidInput, TollkeepError
from tollkeep.payments.providers import KNOWN
from tollkeep.payments.schemas import CheckoutIn

log = logging.getLogger("tollkeep.payments")

webhooks_router = APIRouter(tags=["webhooks"])
public_router = APIRouter(prefix="/v1", tags=["public"])
pay_router = APIRouter(tags=["public"], include_in_schema=False)
admin_router = APIRouter(prefix="/admin", tags=["admin"])


@webhooks_router.post(
    "/webhooks/{provider}",
    summary="A payment provider's webhook: verified, stored raw, acknowledged; processed after",
    responses=errors(400, 401, 404, 413),
)
async def receive_webhook(provider: str, request: Request, tk: Runtime) -> dict[str, Any]:
    return await _receive(tk, provider, request)


async def _receive(tk: Any, provider: str, request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        return await tk.inbox.areceive(provider, body, request.headers)
    except TollkeepError as exc:
        # never the body or the secret: the provider, the reason, the sender
        peer = request.client.host if request.client else "?"
        log.warning("webhook %s refused (%s) from %s: %s", provider[:32], exc.code, peer, exc.message)
        raise


def _hot(provider: str) -> Callable[[Request], Awaitable[JSONResponse]]:
    async def receive(request: Request) -> JSONResponse:
        return JSONResponse(await _receive(request.app.state.tollkeep, provider, request))

    return receive


# served ahead of the router by api.middleware.HotRoutes (like POST /v1/usage): a provider's
# retries arrive in bursts, and FastAPI's routing and dependency machinery cost more than
# verifying and storing the event. Same handler, same answers; other paths (an unknown
# provider) go through the route above.
HOT_ROUTES = {("POST", f"/webhooks/{name}"): _hot(name) for name in KNOWN}


@public_router.post(
    "/checkout",
    status_code=201,
    summary="Start buying a credit pack or a plan: a payment page URL and a claim token",
    responses=errors(401, 403, 404, 413, 422, 502, 503),
)
async def create_checkout(body: CheckoutIn, caller: MaybeCaller, tk: Runtime) -> JSONResponse:
    if isinstance(caller, ServerCaller):
        if not body.customer_id:
            raise InvalidInput(
                "a server key buys for the customer named by customer_id", code="customer_id_required"
            )
        customer_id: str | None = body.customer_id
        source = "api"
    elif caller is not None:
        if body.customer_id and body.customer_id != caller.customer_id:
            raise AuthError("an API key buys for its own customer only", code="customer_mismatch", status=403)
        customer_id = caller.customer_id
        source = "install_id" if caller.anonymous else "checkout"
    else:
        customer_id = None
        source = "checkout"
    out = await run_in_threadpool(
        lambda: tk.payments.create_checkout(
            customer_id=customer_id,
            pack=body.pack,
            plan=body.plan,
            provider=body.provider,
            currency=body.currency,
            email=body.email,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            source=source,
        )
    )
    return JSONResponse(out, status_code=201)


@public_router.get(
    "/checkout/{checkout_id}",
    summary="A checkout's status; once paid, its new API key, shown to the claim token once",
    responses=errors(401, 404),
)
async def get_checkout(
    checkout_id: str,
    caller: MaybeCaller,
    tk: Runtime,
    claim: Annotated[str | None, Query(max_length=200)] = None,
) -> dict[str, Any]:
    customer_id = caller.customer_id if caller is not None and not isinstance(caller, ServerCaller) else None
    return await run_in_threadpool(
        lambda: tk.payments.get_checkout(checkout_id, claim=claim, customer_id=customer_id)
    )


@pay_router.get("/pay/local/{checkout_id}")
async def pay_local(checkout_id: str, tk: Runtime) -> RedirectResponse:
    """DEVELOPMENT ONLY: the local provider's checkout page "pays" when opened."""
    target = await run_in_threadpool(lambda: tk.payments.pay_local(checkout_id))
    return RedirectResponse(target, status_code=303)


@pay_router.get("/v1/checkout/done")
async def checkout_done(
    tk: Runtime,
    tollkeep_checkout: Annotated[str, Query(max_length=64)],
    tollkeep_claim: Annotated[str, Query(max_length=200)],
) -> HTMLResponse:
    """The default success page: the buyer's API key, once (it may take a moment to settle)."""
    try:
        view = await run_in_threadpool(
            lambda: tk.payments.get_checkout(tollkeep_checkout, claim=tollkeep_claim)
        )
    except TollkeepError as exc:
        return HTMLResponse(_page("Checkout", f"<p>{html.escape(exc.message)}</p>"), status_code=exc.status)
    if view["status"] != "paid":
        return HTMLResponse(
            _page(
                "Payment pending", "<p>Your payment is being confirmed. This page refreshes.</p>", refresh=2
            )
        )
    if view.get("api_key"):
        key = html.escape(view["api_key"])
        text = f"<p>Paid. Your API key (shown once, keep it safe):</p><pre>{key}</pre>"
    else:
        text = f"<p>Paid. {html.escape(view.get('message') or '')}</p>"
    return HTMLResponse(_page("Thank you", text))


@pay_router.get("/v1/checkout/cancelled")
async def checkout_cancelled() -> HTMLResponse:
    return HTMLResponse(_page("Checkout cancelled", "<p>Nothing was charged.</p>"))


def _page(title: str, body: str, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'>{meta}<title>{html.escape(title)}</title></head>"
        f"<body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


# ---- operators -----------------------------------------------------------------------------------
@admin_router.get("/inbox", summary="Provider webhooks received, newest first", responses=errors(401, 422))
async def list_inbox(
    tk: Admin,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(pattern="^(pending|processed|ignored|failed)$")] = None,
    type: Annotated[str | None, Query(max_length=128)] = None,
    before: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.payments.list_events(
            provider=provider,
            status=status,
            type=type,
            before=before,
            limit=limit,
            max_bytes=tk.settings.list_max_bytes,
        )
    )


@admin_router.get(
    "/inbox/{inbox_id}", summary="One webhook: payload, kept headers, outcome", responses=errors(401, 404)
)
async def show_inbox(inbox_id: str, tk: Admin) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.inbox.show(inbox_id))


@admin_router.post(
    "/inbox/{inbox_id}/replay",
    summary="Process a webhook again (its effects are idempotent)",
    responses=errors(401, 403, 404),
)
async def replay_inbox(inbox_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.inbox.replay(inbox_id, actor=actor))


@admin_router.get("/payments", summary="Payments applied (and failed), newest first", responses=errors(401))
async def list_payments(
    tk: Admin,
    customer_id: Annotated[str | None, Query(max_length=64)] = None,
    provider: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str | None, Query(max_length=24)] = None,
    before: Annotated[str | None, Query(max_length=40)] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.payments.list_payments(
            customer_id=customer_id,
            provider=provider,
            status=status,
            before=before,
            limit=limit,
            max_bytes=tk.settings.list_max_bytes,
        )
    )


@admin_router.post(
    "/payments/reconcile",
    summary="Re-scan a provider for settled payments the inbox never received, and apply them",
    responses=errors(401, 403, 404, 422, 502),
)
async def reconcile(
    tk: Admin,
    actor: AdminActor,
    provider: Annotated[str, Query(max_length=32)],
    since: datetime,
) -> dict[str, Any]:
    if since.tzinfo is None:
        raise InvalidInput("since needs a timezone (e.g. 2026-01-01T00:00:00Z)", code="invalid_timestamp")
    out = await run_in_threadpool(lambda: tk.payments.reconcile(provider, since))
    await run_in_threadpool(
        lambda: tk.executor.call(
            lambda s: record(
                s, actor, "payments.reconcile", ("provider", provider), after=out, at=tk.clock.now()
            )
        )
    )
    return out
