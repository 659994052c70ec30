"""Events the ledger emits (kit/events.py). The debit path (``POST /v1/usage``, holds, settles)
emits only when a charge crosses a threshold (``CreditsLow``, ``CreditsExhausted``), worked out
from numbers the charge has already: its throughput is what the product lives on, and a
charge's record is its operation row."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["CreditsExhausted", "CreditsGranted", "CreditsLow"]


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


@dataclass(frozen=True)
class CreditsLow(Event):
    """A charge, hold or settle took the customer's available credits (balance plus overdraft
    headroom) below the catalog's ``low_balance`` threshold: from ``before`` (at or above it)
    to ``available`` (below it). Once per crossing (``rules.balance_crossings``)."""

    topic = "credits.low"
    customer_id: str
    available: int
    before: int
    threshold: int
    unit: str
    operation_id: str


@dataclass(frozen=True)
class CreditsExhausted(Event):
    """A charge, hold or settle took the customer's available credits to 0 (or below: never
    past the overdraft limit) from above 0. Once per crossing."""

    topic = "credits.exhausted"
    customer_id: str
    available: int
    before: int
    unit: str
    operation_id: str
