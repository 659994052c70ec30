"""The payments domain's background work: process the inbox, prune it, expire checkouts."""

from __future__ import annotations

from tollkeep.config import Settings
from tollkeep.kit.worker import Job
from tollkeep.payments.inbox import Inbox
from tollkeep.payments.meters import MeterReporter
from tollkeep.payments.service import PaymentsService

__all__ = ["jobs"]


def jobs(
    inbox: Inbox, payments: PaymentsService, settings: Settings, *, meters: MeterReporter | None = None
) -> list[Job]:
    extra = []
    if meters is not None:
        extra.append(
            Job(
                "payments.meters",
                2.0,
                meters.scan,
                jitter=0.2,
                description="queue postpaid plans' metered usage for Stripe (sent by outbox.dispatch)",
            )
        )
    return [
        Job(
            "payments.inbox",
            settings.inbox_interval_seconds,
            inbox.process,
            jitter=0.1,
            description="apply verified provider webhooks (grants, plan changes, refunds), once",
        ),
        Job(
            "payments.prune",
            3600.0,
            inbox.prune,
            jitter=0.2,
            description="delete processed and ignored webhooks past TOLLKEEP_INBOX_RETENTION_DAYS",
        ),
        Job(
            "payments.expire_checkouts",
            60.0,
            payments.expire_checkouts,
            jitter=0.2,
            description="mark unpaid checkouts past their expiry",
        ),
        *extra,
    ]
