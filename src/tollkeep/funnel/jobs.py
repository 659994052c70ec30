"""The funnel's background work: catch up acquisition and activation from new rows."""

from __future__ import annotations

from tollkeep.funnel.service import FunnelService
from tollkeep.kit.worker import Job

__all__ = ["jobs"]


def jobs(funnel: FunnelService) -> list[Job]:
    return [
        Job(
            "funnel.catch_up",
            30.0,
            funnel.catch_up,
            jitter=0.2,
            description="record new customers (acquisition) and first charges (activation)",
        )
    ]
