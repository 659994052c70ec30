"""Admin routes of subscriptions and invoices, and the test clock (``TOLLKEEP_TEST_CLOCK``)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, AdminActor, errors
from tollkeep.subscriptions.schemas import CancelIn, SettleIn, SubscriptionCreate, TestClockIn

router = APIRouter(prefix="/admin", tags=["admin"])


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a customer to a plan (cycle 1 starts now)",
    responses=errors(401, 403, 404, 409, 413, 422),
)
async def create_subscription(body: SubscriptionCreate, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.subscriptions.create(
            body.customer_id, body.plan, provider=body.provider, currency=body.currency, actor=actor
        )
    )


@router.get("/subscriptions", summary="Subscriptions, newest first", responses=errors(401, 422))
async def list_subscriptions(
    tk: Admin, customer_id: str | None = None, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    rows = await run_in_threadpool(
        lambda: tk.subscriptions.list_subscriptions(customer_id=customer_id, status=status, limit=limit)
    )
    return {"data": rows}


@router.get("/subscriptions/{subscription_id}", summary="A subscription", responses=errors(401, 404))
async def show_subscription(subscription_id: str, tk: Admin) -> dict[str, Any]:
    return await run_in_threadpool(tk.subscriptions.get, subscription_id)


@router.get(
    "/subscriptions/{subscription_id}/invoices",
    summary="A subscription's invoices, by cycle, with their rate audit",
    responses=errors(401, 404),
)
async def subscription_invoices(subscription_id: str, tk: Admin) -> dict[str, Any]:
    return {"data": await run_in_threadpool(tk.subscriptions.invoices, subscription_id)}


@router.post(
    "/subscriptions/{subscription_id}/cancel",
    summary="Cancel now, or at the end of the current period",
    responses=errors(401, 403, 404, 409, 413, 422),
)
async def cancel_subscription(
    subscription_id: str, tk: Admin, actor: AdminActor, body: CancelIn | None = None
) -> dict[str, Any]:
    at_end = body.at_period_end if body is not None else False
    return await run_in_threadpool(
        lambda: tk.subscriptions.cancel(subscription_id, at_period_end=at_end, actor=actor)
    )


@router.post(
    "/subscriptions/{subscription_id}/keep",
    summary="Undo a cancel at period end",
    responses=errors(401, 403, 404, 409),
)
async def keep_subscription(subscription_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.subscriptions.keep(subscription_id, actor=actor))


@router.post(
    "/subscriptions/{subscription_id}/retry-renewal",
    summary="Try again to create a renewal invoice whose creation stopped after failures",
    responses=errors(401, 403, 404, 409),
)
async def retry_renewal(subscription_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.subscriptions.retry_renewal(subscription_id, actor=actor))


@router.get("/invoices", summary="Invoices, newest first", responses=errors(401, 422))
async def list_invoices(
    tk: Admin, customer_id: str | None = None, status: str | None = None, limit: int = 100
) -> dict[str, Any]:
    rows = await run_in_threadpool(
        lambda: tk.subscriptions.list_invoices(customer_id=customer_id, status=status, limit=limit)
    )
    return {"data": rows}


@router.get("/invoices/{invoice_id}", summary="An invoice and its rate audit", responses=errors(401, 404))
async def show_invoice(invoice_id: str, tk: Admin) -> dict[str, Any]:
    return await run_in_threadpool(tk.subscriptions.get_invoice, invoice_id)


@router.post(
    "/invoices/{invoice_id}/settle",
    summary="Settle an invoice as its provider's webhook would (idempotent)",
    responses=errors(401, 403, 404, 409, 413, 422),
)
async def settle_invoice(
    invoice_id: str, tk: Admin, actor: AdminActor, body: SettleIn | None = None
) -> dict[str, Any]:
    ref = body.provider_payment_ref if body is not None else None
    return await run_in_threadpool(lambda: tk.subscriptions.settle_invoice(invoice_id, ref, actor=actor))


@router.get(
    "/test-clock", summary="The test clock (TOLLKEEP_TEST_CLOCK=true only)", responses=errors(401, 404)
)
async def show_test_clock(tk: Admin) -> dict[str, Any]:
    return tk.test_clock_view()


@router.post(
    "/test-clock",
    summary="Move the server's clock forward and run the due workers (TOLLKEEP_TEST_CLOCK=true only)",
    responses=errors(401, 403, 404, 413, 422),
)
async def advance_test_clock(body: TestClockIn, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(tk.advance_test_clock, body.advance_seconds)
