"""Reads of the payments domain (listings for operators)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.pagination import clamp_limit, page
from tollkeep.payments.inbox import inbox_view
from tollkeep.payments.models import Checkout, InboxEvent, Payment

__all__ = ["checkout_view", "list_events", "list_payments", "payment_view"]

IBX = table_of(InboxEvent)
PAY = table_of(Payment)
CHK = table_of(Checkout)


def list_events(
    s: Tx,
    *,
    provider: str | None = None,
    status: str | None = None,
    type: str | None = None,
    before: str | None = None,
    limit: int | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """Newest first; ``next`` is the id to pass as ``before`` for the following page."""
    n = clamp_limit(limit)
    stmt = select(IBX).order_by(IBX.c.id.desc()).limit(n + 1)
    if provider:
        stmt = stmt.where(IBX.c.provider == provider)
    if status:
        stmt = stmt.where(IBX.c.status == status)
    if type:
        stmt = stmt.where(IBX.c.type == type)
    if before:
        stmt = stmt.where(IBX.c.id < before)
    return page([inbox_view(r) for r in s.execute(stmt)], n, max_bytes=max_bytes)


def payment_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "provider": row.provider,
        "payment_id": row.payment_id,
        "customer_id": row.customer_id,
        "checkout_id": row.checkout_id,
        "status": row.status,
        "pack": row.pack,
        "plan": row.plan,
        "amount": row.amount,
        "currency": row.currency,
        "credits": row.credits,
        "grant_id": row.grant_id,
        "refunded_amount": row.refunded_amount,
        "credits_taken_back": row.credits_taken_back,
        "shortfall": row.shortfall,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def list_payments(
    s: Tx,
    *,
    customer_id: str | None = None,
    provider: str | None = None,
    status: str | None = None,
    before: str | None = None,
    limit: int | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    n = clamp_limit(limit)
    stmt = select(PAY).order_by(PAY.c.id.desc()).limit(n + 1)
    if customer_id:
        stmt = stmt.where(PAY.c.customer_id == customer_id)
    if provider:
        stmt = stmt.where(PAY.c.provider == provider)
    if status:
        stmt = stmt.where(PAY.c.status == status)
    if before:
        stmt = stmt.where(PAY.c.id < before)
    return page([payment_view(r) for r in s.execute(stmt)], n, max_bytes=max_bytes)


def checkout_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "provider": row.provider,
        "status": row.status,
        "url": row.url,
        "customer_id": row.customer_id,
        "pack": row.pack,
        "plan": row.plan,
        "amount": row.amount,
        "currency": row.currency,
        "created_at": iso(row.created_at),
        "expires_at": iso(row.expires_at),
        "paid_at": iso(row.paid_at),
        "claimed": row.claimed_at is not None,
    }
