"""Events the webhooks domain emits (kit/events.py)."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["WebhookEndpointDisabled"]


@dataclass(frozen=True)
class WebhookEndpointDisabled(Event):
    """An endpoint was disabled because every attempt to reach it failed for too long (written
    to the outbox, so the seller's other endpoints hear of it)."""

    topic = "webhook_endpoint.disabled"
    endpoint_id: str
    url: str
    reason: str
    failing_since: str | None
