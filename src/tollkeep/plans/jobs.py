"""The plans domain's background work: allowance renewal."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.plans.service import PlanService

__all__ = ["jobs"]


def jobs(plans: PlanService, settings: Settings) -> list[Job]:
    return [
        Job(
            "plans.renew_allowances",
            settings.sweeper_interval_seconds,
            plans.renew_allowances,
            jitter=0.1,
            description="grant plan allowances whose period has run out",
        )
    ]
