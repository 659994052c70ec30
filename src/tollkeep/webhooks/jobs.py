"""The webhooks domain's background work: send due deliveries."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.webhooks.service import WebhookService

__all__ = ["jobs"]


def jobs(webhooks: WebhookService, settings: Settings) -> list[Job]:
    return [
        Job(
            "webhooks.deliver",
            settings.webhooks_interval_seconds,
            webhooks.deliver_due,
            jitter=0.1,
            description="send due webhook deliveries (signed; retried on a schedule)",
        )
    ]
