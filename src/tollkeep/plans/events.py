"""Events the plans domain emits (kit/events.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["PlanChanged"]


@dataclass(frozen=True)
class PlanChanged(Event):
    """A customer moved to another plan (``plan`` None: no plan). Emitted only when the plan
    really changed, and not for the plan a new customer starts on (``customer.created`` says
    that one)."""

    topic = "plan.changed"
    customer_id: str
    plan: str | None
    previous: str | None
    carried_over: int
