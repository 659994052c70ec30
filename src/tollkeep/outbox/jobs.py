"""The outbox's background work: hand committed events to their sinks."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.outbox.service import OutboxService

__all__ = ["jobs"]


def jobs(outbox: OutboxService, settings: Settings) -> list[Job]:
    return [
        Job(
            "outbox.dispatch",
            settings.outbox_interval_seconds,
            outbox.dispatch,
            jitter=0.1,
            description="hand committed outbox events to their sinks (webhooks)",
        )
    ]
