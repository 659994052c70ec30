"""The outbox: domain events written in the same transaction as the change they report, then
handed, after the commit and outside any transaction, to the sinks registered for their topic
(signed outbound webhooks will be one; tests register their own)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tollkeep.kit.clock import Clock, SystemClock
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.events import Event, EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.outbox import repository as repo

__all__ = ["ALL_TOPICS", "OutboxMessage", "OutboxService", "Sink"]

log = logging.getLogger("tollkeep.outbox")
ALL_TOPICS = "*"


@dataclass(frozen=True)
class OutboxMessage:
    """What a sink receives. ``id`` is stable across retries: use it to deduplicate (Standard
    Webhooks' ``webhook-id``)."""

    id: str
    topic: str
    customer_id: str | None
    payload: dict[str, Any]
    created_at: datetime
    attempt: int


Sink = Callable[[OutboxMessage], None]


class OutboxService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        *,
        clock: Clock | None = None,
        batch_size: int = 100,
        lease_seconds: float = 300.0,
        max_backoff_seconds: float = 3600.0,
    ) -> None:
        self.db = db
        self.executor = executor
        self.clock = clock or SystemClock()
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.max_backoff = max_backoff_seconds
        self._sinks: dict[str, list[Sink]] = {}
        self._lock = threading.Lock()

    # ---- writing: in the emitting transaction -------------------------------------------------
    def capture(self, bus: EventBus, *event_types: type[Event]) -> None:
        """Write every event of these types to the outbox, in the transaction that emits it."""
        for event_type in event_types:
            bus.subscribe_in_tx(event_type, self.record)

    def record(self, s: Tx, event: Event) -> str:
        return repo.add(
            s,
            topic=event.topic,
            customer_id=getattr(event, "customer_id", None),
            payload=event.payload(),
            now=self.clock.now(),
        )

    def enqueue(
        self,
        s: Tx,
        *,
        id: str,
        topic: str,
        customer_id: str | None,
        payload: dict[str, Any],
        created_at: datetime,
    ) -> bool:
        """Write an event with its own ``id``, once (a second call with the id writes nothing):
        for events derived from committed facts by a scan that may see a fact twice."""
        return repo.add_once(
            s,
            id=id,
            topic=topic,
            customer_id=customer_id,
            payload=payload,
            created_at=created_at,
            now=self.clock.now(),
        )

    # ---- delivering: sinks ----------------------------------------------------------------------
    def register_sink(self, topic: str, sink: Sink) -> None:
        """Hand every event of ``topic`` (``"*"``: of every topic) to ``sink(message)``. A sink that
        raises fails the delivery: the event is offered again (to every sink of its topic) after a
        back-off, so a sink must be idempotent on ``message.id``."""
        with self._lock:
            self._sinks.setdefault(topic, []).append(sink)

    def unregister_sink(self, topic: str, sink: Sink) -> None:
        with self._lock:
            sinks = self._sinks.get(topic, [])
            if sink in sinks:
                sinks.remove(sink)

    def sinks_for(self, topic: str) -> list[Sink]:
        with self._lock:
            return [*self._sinks.get(topic, ()), *self._sinks.get(ALL_TOPICS, ())]

    def backoff(self, attempt: int) -> timedelta:
        """After a failed attempt n: 5 s, 10 s, 20 s, … capped at ``max_backoff_seconds``."""
        return timedelta(seconds=min(self.max_backoff, 5.0 * 2 ** min(max(attempt - 1, 0), 20)))

    def dispatch(self, *, limit: int | None = None) -> dict[str, int]:
        """Claim a batch of due events, hand each to its sinks, record the outcome. An event is
        delivered once every sink of its topic took it (none registered: delivered as it is)."""
        now = self.clock.now()
        with self.db.scope(write=False) as s:
            if not repo.any_due(s, now):
                return {"delivered": 0, "failed": 0}
        n = limit or self.batch_size
        rows = self.executor.call(lambda s: repo.claim(s, now, now + self.lease, n))
        delivered: list[str] = []
        failed: list[tuple[str, str, int]] = []
        for row in rows:
            message = OutboxMessage(
                row.id, row.topic, row.customer_id, row.payload, row.created_at, row.attempts
            )
            errors = self._deliver(message)
            if errors:
                failed.append((row.id, "; ".join(errors)[:2000], row.attempts))
            else:
                delivered.append(row.id)

        def settle(s: Tx) -> None:
            at = self.clock.now()
            repo.mark_delivered(s, delivered, at)
            for event_id, error, attempt in failed:
                repo.mark_failed(s, event_id, error, at + self.backoff(attempt))

        if rows:
            self.executor.call(settle)
        return {"delivered": len(delivered), "failed": len(failed)}

    def _deliver(self, message: OutboxMessage) -> list[str]:
        errors = []
        for sink in self.sinks_for(message.topic):
            try:
                sink(message)
            except Exception as exc:
                log.warning("outbox sink %r failed on %s (%s): %s", sink, message.id, message.topic, exc)
                errors.append(f"{type(exc).__name__}: {exc}")
        return errors

    # ---- reads ----------------------------------------------------------------------------------
    def pending(self) -> int:
        with self.db.scope(write=False) as s:
            return repo.count_pending(s)

    def recent(
        self, *, limit: int = 100, topic: str | None = None, pending: bool = False
    ) -> list[dict[str, Any]]:
        with self.db.scope(write=False) as s:
            return [r._asdict() for r in repo.recent(s, limit=limit, topic=topic, pending=pending)]
