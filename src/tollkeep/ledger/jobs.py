"""The ledger's background work: the sweeper."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.ledger.service import LedgerService

__all__ = ["jobs"]


def jobs(ledger: LedgerService, settings: Settings) -> list[Job]:
    return [
        Job(
            "ledger.sweep",
            settings.sweeper_interval_seconds,
            ledger.sweep,
            jitter=0.1,
            description="release expired holds, expire grants past their end",
        ),
    ]
