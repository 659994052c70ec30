"""Admin routes of subscriptions and invoices, and the test clock (``TOLLKEEP_TEST_CLOCK``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from starlette.concurrency import run_in_threadpool

from tollkeep.api.deps import Admin, AdminActor, Caller, Runtime, customer_for, errors
from tollkeep.kit.errors import InvalidInput
from tollkeep.subscriptions.schemas import (
    CancelIn,
    ChangePlanIn,
    CodeCreate,
    CodeRedeemIn,
    SettleIn,
    SubscriptionCreate,
    TestClockIn,
    UpgradeIn,
    UpgradeQuoteIn,
)

router = APIRouter(prefix="/admin", tags=["admin"])
public_router = APIRouter(prefix="/v1", tags=["subscriptions"])


# ---- public: the buyer's API key (their own subscription) or a server key naming the customer
@public_router.post(
    "/upgrade-quote",
    summary="What changing the subscription's plan owes now, when it takes effect, what renews",
    responses=errors(401, 403, 404, 409, 422),
)
async def upgrade_quote(body: UpgradeQuoteIn, caller: Caller, tk: Runtime) -> dict[str, Any]:
    caller.require("balance:read")
    cid = customer_for(caller, body.customer_id)
    return await run_in_threadpool(
        lambda: tk.subscriptions.changes.quote(
            cid, body.plan, subscription_id=body.subscription_id, code=body.code
        )
    )


@public_router.post(
    "/upgrade",
    summary="Change the plan: an invoice for the prorated difference (applied when paid), "
    "a zero-charge change at once, a downgrade at the next renewal (idempotent)",
    responses=errors(401, 403, 404, 409, 422),
)
async def upgrade(
    body: UpgradeIn,
    caller: Caller,
    tk: Runtime,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> dict[str, Any]:
    caller.require("balance:read")
    cid = customer_for(caller, body.customer_id)
    if idempotency_key and body.idempotency_key and idempotency_key != body.idempotency_key:
        raise InvalidInput(
            "the Idempotency-Key header and idempotency_key differ", code="idempotency_key_mismatch"
        )
    key = idempotency_key or body.idempotency_key
    return await run_in_threadpool(
        lambda: tk.subscriptions.changes.upgrade(
            cid, body.plan, subscription_id=body.subscription_id, idempotency_key=key, code=body.code
        )
    )


@public_router.post(
    "/codes/redeem",
    status_code=201,
    summary="Redeem a free-licence code: a licence of its plan (once per customer)",
    responses=errors(401, 403, 404, 409, 422),
)
async def redeem_code(body: CodeRedeemIn, caller: Caller, tk: Runtime) -> dict[str, Any]:
    caller.require("balance:read")
    cid = customer_for(caller, body.customer_id)
    return await run_in_threadpool(lambda: tk.subscriptions.codes.redeem_free_license(cid, body.code))


@router.post(
    "/subscriptions",
    status_code=201,
    summary="Subscribe a customer to a plan (cycle 1 starts now)",
    responses=errors(401, 403, 404, 409, 413, 422),
)
async def create_subscription(body: SubscriptionCreate, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.subscriptions.create(
            body.customer_id,
            body.plan,
            provider=body.provider,
            currency=body.currency,
            code=body.code,
            actor=actor,
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


@router.post(
    "/subscriptions/{subscription_id}/pause",
    summary="Pause: no renewal, no lapse, the plan's entitlements dropped until resumed",
    responses=errors(401, 403, 404, 409),
)
async def pause(subscription_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.subscriptions.pause(subscription_id, actor=actor))


@router.post(
    "/subscriptions/{subscription_id}/resume",
    summary="Resume a paused subscription: the next cycle is due (invoiced) now",
    responses=errors(401, 403, 404, 409),
)
async def resume(subscription_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.subscriptions.resume(subscription_id, actor=actor))


@router.post(
    "/subscriptions/{subscription_id}/change-plan",
    summary="Change the plan now (nothing charged) or at the next renewal",
    responses=errors(401, 403, 404, 409, 422),
)
async def change_plan(
    subscription_id: str, body: ChangePlanIn, tk: Admin, actor: AdminActor
) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.subscriptions.changes.admin_change(subscription_id, body.plan, when=body.when, actor=actor)
    )


@router.post(
    "/subscriptions/{subscription_id}/cancel-scheduled-change",
    summary="Cancel a plan change scheduled for the next renewal",
    responses=errors(401, 403, 404, 409),
)
async def cancel_scheduled_change(subscription_id: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.subscriptions.changes.cancel_scheduled(subscription_id, actor=actor)
    )


@router.get(
    "/subscriptions/{subscription_id}/plan-changes",
    summary="A subscription's plan changes",
    responses=errors(401, 404),
)
async def plan_changes(subscription_id: str, tk: Admin) -> dict[str, Any]:
    return {"data": await run_in_threadpool(tk.subscriptions.changes.list_changes, subscription_id)}


@router.post("/codes", status_code=201, summary="Create a code", responses=errors(401, 403, 409, 422))
async def create_code(body: CodeCreate, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(
        lambda: tk.subscriptions.codes.create(
            body.code,
            body.kind,
            percent=body.percent,
            amount=body.amount,
            currency=body.currency,
            plans=body.plans,
            duration=body.duration,
            max_redemptions=body.max_redemptions,
            expires_at=body.expires_at,
            actor=actor,
        )
    )


@router.get("/codes", summary="Codes, newest first", responses=errors(401))
async def list_codes(tk: Admin, limit: int = 100) -> dict[str, Any]:
    return {"data": await run_in_threadpool(lambda: tk.subscriptions.codes.list(limit=limit))}


@router.get("/codes/{code}", summary="A code and its redemptions count", responses=errors(401, 404))
async def show_code(code: str, tk: Admin) -> dict[str, Any]:
    return await run_in_threadpool(tk.subscriptions.codes.get, code)


@router.post("/codes/{code}/disable", summary="No more redemptions", responses=errors(401, 403, 404))
async def disable_code(code: str, tk: Admin, actor: AdminActor) -> dict[str, Any]:
    return await run_in_threadpool(lambda: tk.subscriptions.codes.disable(code, actor=actor))


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
