"""The subscriptions domain's background work: the renewal worker."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.subscriptions.service import SubscriptionService

__all__ = ["jobs"]


def jobs(subscriptions: SubscriptionService, settings: Settings) -> list[Job]:
    return [
        Job(
            "subscriptions.renew",
            settings.subscriptions_interval_seconds,
            subscriptions.run_due,
            jitter=0.1,
            description="end due periods, invoice the next cycle (back-off on failure), lapse",
        )
    ]
