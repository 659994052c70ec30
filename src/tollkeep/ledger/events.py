"""Events the ledger emits (kit/events.py). None on the debit path (``POST /v1/usage``): its
throughput is what the product lives on, and a charge's record is its operation row."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["CreditsGranted"]


@dataclass(frozen=True)
class CreditsGranted(Event):
    """Credits were granted (a purchase, a promotion, an operator's grant, a refund grant made
    by ``grant``), once per idempotency key: a replayed grant emits nothing."""

    topic = "credits.granted"
    customer_id: str
    grant_id: str
    operation_id: str
    amount: int
    source: str
    unit: str
    idempotency_key: str
    expires_at: str | None
