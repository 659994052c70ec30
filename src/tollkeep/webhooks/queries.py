"""Read model of the webhooks domain: endpoints (never their secrets), deliveries newest first,
a delivery's attempt log."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from tollkeep.kit.clock import iso
from tollkeep.kit.db import Tx
from tollkeep.kit.models import table_of
from tollkeep.kit.pagination import clamp_limit, page
from tollkeep.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = ["attempt_view", "deliveries", "delivery", "delivery_view", "endpoint_view"]

E = table_of(WebhookEndpoint)
D = table_of(WebhookDelivery)
A = table_of(WebhookAttempt)


def endpoint_view(row: Any) -> dict[str, Any]:
    """An endpoint as every answer shows it: its secret never (only create and rotate-secret
    return it, once)."""
    return {
        "id": row.id,
        "url": row.url,
        "description": row.description,
        "events": None if row.events is None else list(row.events),
        "status": row.status,
        "disabled_reason": row.disabled_reason,
        "disabled_at": iso(row.disabled_at),
        "failing_since": iso(row.failing_since),
        "last_success_at": iso(row.last_success_at),
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
    }


def delivery_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "endpoint_id": row.endpoint_id,
        "event_id": row.event_id,
        "type": row.topic,
        "status": row.status,
        "attempts": row.attempts,
        "response_status": row.response_status,
        "latency_ms": row.latency_ms,
        "error": row.error,
        "created_at": iso(row.created_at),
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "delivered_at": iso(row.delivered_at),
    }


def attempt_view(row: Any) -> dict[str, Any]:
    return {
        "attempt": row.attempt,
        "at": iso(row.at),
        "ok": bool(row.ok),
        "response_status": row.response_status,
        "latency_ms": row.latency_ms,
        "error": row.error,
    }


def deliveries(
    s: Tx,
    endpoint_id: str,
    *,
    limit: int | None = None,
    after: str | None = None,
    max_bytes: int | None = None,
) -> dict[str, Any]:
    """An endpoint's deliveries, newest first; ``next`` is the ``after`` of the following page."""
    n = clamp_limit(limit)
    stmt = select(D).where(D.c.endpoint_id == endpoint_id).order_by(D.c.id.desc()).limit(n + 1)
    if after:
        stmt = stmt.where(D.c.id < after)
    return page([delivery_view(r) for r in s.execute(stmt)], n, max_bytes=max_bytes)


def delivery(s: Tx, delivery_id: str) -> dict[str, Any] | None:
    """A delivery with its attempt log (oldest first) and the body it sends."""
    row = s.execute(select(D).where(D.c.id == delivery_id)).first()
    if row is None:
        return None
    attempts = s.execute(select(A).where(A.c.delivery_id == delivery_id).order_by(A.c.attempt, A.c.id))
    return {**delivery_view(row), "body": row.body, "attempt_log": [attempt_view(a) for a in attempts]}
