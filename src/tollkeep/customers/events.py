"""Events the customers domain emits (kit/events.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["CustomerCreated", "CustomerStatusChanged"]


@dataclass(frozen=True)
class CustomerStatusChanged(Event):
    """A customer's status moved (``active`` / ``suspended`` / ``closed``). Emitted only when it
    really changed."""

    topic = "customer.status_changed"
    customer_id: str
    status: str
    previous: str


@dataclass(frozen=True)
class CustomerCreated(Event):
    """A customer was created (by an operator, or an anonymous install id seen for the first
    time: ``anonymous``), with their wallet and plan."""

    topic = "customer.created"
    customer_id: str
    external_id: str
    email: str | None
    name: str | None
    plan: str | None
    anonymous: bool
