"""Events the customers domain emits (kit/events.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["CustomerStatusChanged"]


@dataclass(frozen=True)
class CustomerStatusChanged(Event):
    """A customer's status moved (``active`` / ``suspended`` / ``closed``). Emitted only when it
    really changed."""

    topic = "customer.status_changed"
    customer_id: str
    status: str
    previous: str
