"""Events the payments domain emits (written to the outbox in the payment's transaction)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["PaymentFailedEvent", "PaymentRefundedEvent", "PaymentSucceeded"]


@dataclass(frozen=True)
class PaymentSucceeded(Event):
    """A payment settled and took effect (credits granted and/or plan set), once."""

    topic = "payment.succeeded"
    customer_id: str
    provider: str
    payment_id: str
    amount: int | None
    currency: str | None
    pack: str | None
    plan: str | None
    credits: int
    checkout_id: str | None
    renewal: bool


@dataclass(frozen=True)
class PaymentFailedEvent(Event):
    topic = "payment.failed"
    customer_id: str | None
    provider: str
    payment_id: str
    reason: str | None
    amount: int | None
    currency: str | None


@dataclass(frozen=True)
class PaymentRefundedEvent(Event):
    """A refund took credits back: ``taken`` of ``credits`` asked; ``shortfall`` could not be
    (already spent past the overdraft limit)."""

    topic = "payment.refunded"
    customer_id: str
    provider: str
    payment_id: str
    refund_id: str
    amount: int
    currency: str | None
    credits: int
    taken: int
    shortfall: int
