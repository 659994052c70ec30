"""Outbound webhooks: the seller's endpoints, the fan-out of outbox events into deliveries, and
the deliverer that sends them signed (Standard Webhooks), retries them and gives up on
endpoints that keep failing.

Three steps, each its own short unit of work, none holding a transaction while HTTP runs:

1. **fan-out** (:meth:`WebhookService.fan_out`, an outbox sink for every topic): one
   ``webhook_deliveries`` row per matching enabled endpoint, unique per (endpoint, event), so
   an event the outbox offers again adds nothing;
2. **claim** (``repository.claim``): due rows leased to this deliverer (``FOR UPDATE SKIP
   LOCKED`` on PostgreSQL), one more attempt each;
3. **send** (``sender.py``, concurrently, outside any transaction), then **record** each
   outcome, its attempt log entry, the next attempt or the final status, and the endpoint's
   health (which may disable it: ``WebhookEndpointDisabled``, written to the outbox in that
   same transaction).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any

from tollkeep.audit import record
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, SystemClock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Conflict, InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.jsonsafe import check_text
from tollkeep.outbox import OutboxMessage
from tollkeep.webhooks import queries
from tollkeep.webhooks import repository as repo
from tollkeep.webhooks.domain import (
    DEFAULT_SCHEDULE,
    TEST_TOPIC,
    RuleError,
    after_failure,
    message_body,
    new_secret,
    normalize_events,
    should_disable,
    topic_matches,
)
from tollkeep.webhooks.events import WebhookEndpointDisabled
from tollkeep.webhooks.guard import Resolver, check_registration, system_resolver
from tollkeep.webhooks.sender import Outcome, Sender

__all__ = ["WebhookService"]

log = logging.getLogger("tollkeep.webhooks")

ENABLED, DISABLED = "enabled", "disabled"
MAX_OVERLAP_SECONDS = 7 * 86400
_IDLE = {"delivered": 0, "retrying": 0, "failed": 0}


class WebhookService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        *,
        topics: Callable[[], Iterable[str]],
        events: EventBus | None = None,
        clock: Clock | None = None,
        allow_private: bool = False,
        concurrency: int = 16,
        timeout: float = 10.0,
        schedule: Sequence[float] = DEFAULT_SCHEDULE,
        disable_after_seconds: float = 86_400.0,
        batch_size: int = 100,
        lease_seconds: float = 300.0,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.db = db
        self.executor = executor
        self.topics = topics
        self.events = events or EventBus()  # WebhookEndpointDisabled goes out here
        self.clock = clock or SystemClock()
        self.allow_private = allow_private
        self.schedule = tuple(schedule)
        self.disable_after = disable_after_seconds
        self.batch_size = batch_size
        self.lease = timedelta(seconds=lease_seconds)
        self.resolver = resolver
        self.sender = Sender(
            concurrency=concurrency, timeout=timeout, allow_private=allow_private, resolver=resolver
        )

    # ---- endpoints ------------------------------------------------------------------------------
    def _url(self, url: str) -> str:
        return check_registration(url, allow_private=self.allow_private, resolver=self.resolver)

    def _events(self, events: Iterable[str] | None) -> list[str] | None:
        try:
            return normalize_events(events, self.topics())
        except RuleError as exc:
            raise InvalidInput(exc.message, code=exc.code) from None

    @staticmethod
    def _description(text: str | None) -> str | None:
        if text is None:
            return None
        if len(text) > 255:
            raise InvalidInput("description: at most 255 characters", code="invalid_description")
        return check_text(text, "description")

    def create(
        self,
        url: str,
        *,
        events: Iterable[str] | None = None,
        description: str | None = None,
        actor: Actor,
    ) -> dict[str, Any]:
        """Register an endpoint; the answer carries its signing secret, the only time it is shown."""
        row: dict[str, Any] = {
            "id": new_id("whe"),
            "url": self._url(url),
            "description": self._description(description),
            "events": self._events(events),
            "secret": new_secret(),
            "previous_secret": None,
            "previous_secret_until": None,
            "status": ENABLED,
            "disabled_reason": None,
            "disabled_at": None,
            "failing_since": None,
            "last_success_at": None,
            "created_by": actor.label,
        }

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            repo.insert_endpoint(s, {**row, "created_at": now, "updated_at": now})
            view = queries.endpoint_view(repo.get_endpoint(s, row["id"]))
            record(s, actor, "webhook_endpoint.create", ("webhook_endpoint", row["id"]), after=view, at=now)
            return view

        return {**self.executor.call(fn), "secret": row["secret"]}

    def list(self) -> list[dict[str, Any]]:
        with self.db.scope(write=False) as s:
            return [queries.endpoint_view(r) for r in repo.list_endpoints(s)]

    def get(self, endpoint_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.endpoint_view(self._endpoint(s, endpoint_id))

    @staticmethod
    def _endpoint(s: Tx, endpoint_id: str) -> Any:
        row = repo.get_endpoint(s, endpoint_id)
        if row is None:
            raise NotFound(f"webhook endpoint {endpoint_id!r} not found", code="webhook_endpoint_not_found")
        return row

    def update(self, endpoint_id: str, changes: Mapping[str, Any], *, actor: Actor) -> dict[str, Any]:
        """Change what ``changes`` names: ``url``, ``events`` (None: every event),
        ``description``, ``status`` (``enabled`` / ``disabled``). Enabling clears the failure
        record; the endpoint's held deliveries go out again."""
        values: dict[str, Any] = {}
        if "url" in changes:
            values["url"] = self._url(changes["url"])
        if "events" in changes:
            values["events"] = self._events(changes["events"])
        if "description" in changes:
            values["description"] = self._description(changes["description"])
        status = changes.get("status")
        if "status" in changes and status not in (ENABLED, DISABLED):
            raise InvalidInput("status must be enabled or disabled", code="invalid_status")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            row = self._endpoint(s, endpoint_id)
            before = queries.endpoint_view(row)
            update = dict(values)
            if status == ENABLED and row.status != ENABLED:
                update.update(status=ENABLED, disabled_reason=None, disabled_at=None, failing_since=None)
            elif status == DISABLED and row.status != DISABLED:
                update.update(status=DISABLED, disabled_reason="operator", disabled_at=now)
            if update:
                repo.set_endpoint(s, endpoint_id, **update, updated_at=now)
            after = queries.endpoint_view(self._endpoint(s, endpoint_id))
            if {**after, "updated_at": None} != {**before, "updated_at": None}:
                target = ("webhook_endpoint", endpoint_id)
                record(s, actor, "webhook_endpoint.update", target, before=before, after=after, at=now)
            return after

        return self.executor.call(fn)

    def remove(self, endpoint_id: str, *, actor: Actor) -> None:
        """Delete an endpoint with its deliveries and their log; nothing more is sent to it."""

        def fn(s: Tx) -> None:
            now = self.clock.now()
            before = queries.endpoint_view(self._endpoint(s, endpoint_id))
            repo.delete_endpoint(s, endpoint_id)
            record(
                s, actor, "webhook_endpoint.delete", ("webhook_endpoint", endpoint_id), before=before, at=now
            )

        self.executor.call(fn)

    def rotate_secret(self, endpoint_id: str, *, overlap_seconds: int = 0, actor: Actor) -> dict[str, Any]:
        """A new signing secret (in the answer, the only time it is shown). For ``overlap_seconds``
        the old secret signs too (a second ``v1,`` signature), so receivers can switch without
        dropping a delivery; 0 (the default): the old secret stops at once."""
        if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
            raise InvalidInput("overlap_seconds must be between 0 and 7 days", code="invalid_overlap")
        secret = new_secret()

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            row = self._endpoint(s, endpoint_id)
            repo.set_endpoint(
                s,
                endpoint_id,
                secret=secret,
                previous_secret=row.secret if overlap_seconds else None,
                previous_secret_until=now + timedelta(seconds=overlap_seconds) if overlap_seconds else None,
                updated_at=now,
            )
            after = {"rotated_at": iso(now), "previous_secret_valid_until": None}
            if overlap_seconds:
                after["previous_secret_valid_until"] = iso(now + timedelta(seconds=overlap_seconds))
            record(
                s,
                actor,
                "webhook_endpoint.rotate_secret",
                ("webhook_endpoint", endpoint_id),
                after=after,
                at=now,
            )
            return queries.endpoint_view(self._endpoint(s, endpoint_id))

        return {**self.executor.call(fn), "secret": secret}

    def send_test(self, endpoint_id: str, *, actor: Actor) -> dict[str, Any]:
        """Send a ``webhook.test`` event to this endpoint only, now; returns its delivery (the
        attempt's outcome in it). A failed test is retried like any delivery."""
        delivery_id = new_id("whd")

        def fn(s: Tx) -> None:
            now = self.clock.now()
            row = self._endpoint(s, endpoint_id)
            if row.status != ENABLED:
                raise Conflict("this endpoint is disabled: enable it first", code="webhook_endpoint_disabled")
            event_id = new_id("evt")
            payload = {"endpoint_id": endpoint_id, "message": "a test event from tollkeep"}
            repo.add_deliveries(
                s,
                [
                    self._delivery_row(
                        delivery_id, endpoint_id, event_id, TEST_TOPIC, iso(now) or "", payload, now
                    )
                ],
            )
            target = ("webhook_endpoint", endpoint_id)
            after = {"delivery_id": delivery_id, "event_id": event_id}
            record(s, actor, "webhook_endpoint.test", target, after=after, at=now)

        self.executor.call(fn)
        self.deliver(only=[delivery_id])
        return self.delivery(delivery_id)

    # ---- deliveries ------------------------------------------------------------------------------
    def deliveries(
        self,
        endpoint_id: str,
        *,
        limit: int | None = None,
        after: str | None = None,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            self._endpoint(s, endpoint_id)
            return queries.deliveries(s, endpoint_id, limit=limit, after=after, max_bytes=max_bytes)

    def delivery(self, delivery_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            out = queries.delivery(s, delivery_id)
        if out is None:
            raise NotFound(f"webhook delivery {delivery_id!r} not found", code="webhook_delivery_not_found")
        return out

    def redeliver(self, delivery_id: str, *, actor: Actor) -> dict[str, Any]:
        """Send a delivery again now, with the same ``webhook-id``, whatever its status (delivered,
        failed, waiting for a retry), then on the retry schedule from its start if it fails.
        Refused while an attempt is in flight, and for a disabled endpoint."""

        def fn(s: Tx) -> None:
            now = self.clock.now()
            row = repo.get_delivery(s, delivery_id)
            if row is None:
                raise NotFound(
                    f"webhook delivery {delivery_id!r} not found", code="webhook_delivery_not_found"
                )
            if self._endpoint(s, row.endpoint_id).status != ENABLED:
                raise Conflict("its endpoint is disabled: enable it first", code="webhook_endpoint_disabled")
            if row.status == "sending" and row.next_attempt_at is not None and row.next_attempt_at > now:
                raise Conflict("an attempt is in flight", code="webhook_delivery_in_flight")
            repo.requeue(s, delivery_id, now)
            before = {"status": row.status, "attempts": row.attempts}
            record(
                s,
                actor,
                "webhook_delivery.redeliver",
                ("webhook_delivery", delivery_id),
                before=before,
                at=now,
            )

        self.executor.call(fn)
        self.deliver(only=[delivery_id])
        return self.delivery(delivery_id)

    # ---- fan-out: the outbox sink ------------------------------------------------------------------
    @staticmethod
    def _delivery_row(
        delivery_id: str,
        endpoint_id: str,
        event_id: str,
        topic: str,
        timestamp: str,
        payload: dict[str, Any],
        now: Any,
    ) -> dict[str, Any]:
        return {
            "id": delivery_id,
            "endpoint_id": endpoint_id,
            "event_id": event_id,
            "topic": topic,
            "body": message_body(topic, timestamp, payload),
            "status": "pending",
            "attempts": 0,
            "round_start": 0,
            "next_attempt_at": now,
            "last_attempt_at": None,
            "delivered_at": None,
            "response_status": None,
            "latency_ms": None,
            "error": None,
            "created_at": now,
        }

    def fan_out(self, message: OutboxMessage) -> None:
        """An outbox event becomes one delivery per enabled endpoint that takes its topic and
        existed when it was written (an endpoint registered later does not get old events)."""
        with self.db.scope(write=False) as s:
            if not repo.any_enabled(s):  # no endpoints: no write
                return
        timestamp = iso(message.created_at) or ""

        def fn(s: Tx) -> int:
            now = self.clock.now()
            rows = [
                self._delivery_row(
                    new_id("whd"), ep.id, message.id, message.topic, timestamp, message.payload, now
                )
                for ep in repo.subscribers(s, message.created_at)
                if topic_matches(ep.events, message.topic)
            ]
            return repo.add_deliveries(s, rows)

        self.executor.call(fn)

    # ---- delivering: the job -------------------------------------------------------------------------
    def deliver(self, *, limit: int | None = None, only: Sequence[str] | None = None) -> dict[str, int]:
        """Claim one batch of due deliveries (or the ones named in ``only``, if due), send them,
        record the outcomes. Returns how many were delivered, will be retried, failed for good."""
        now = self.clock.now()
        if only is None:
            with self.db.scope(write=False) as s:
                if not repo.any_due(s, now):
                    return dict(_IDLE)
        n = limit or self.batch_size
        rows = self.executor.call(lambda s: repo.claim(s, now, now + self.lease, n, only=only))
        if not rows:
            return dict(_IDLE)
        outcomes = self.sender.send_all(rows, now)
        return self.executor.call(lambda s: self._record(s, rows, outcomes))

    def deliver_due(self, *, max_seconds: float = 5.0) -> dict[str, int]:
        """The job's run: batch after batch while batches come back full, for up to
        ``max_seconds`` (a backlog drains at the speed of sending, not one batch per interval)."""
        total = dict(_IDLE)
        deadline = time.monotonic() + max_seconds
        while True:
            done = self.deliver()
            for k, v in done.items():
                total[k] += v
            if sum(done.values()) < self.batch_size or time.monotonic() >= deadline:
                return total

    def _record(self, s: Tx, rows: Sequence[Any], outcomes: Sequence[Outcome]) -> dict[str, int]:
        at = self.clock.now()
        counts = dict(_IDLE)
        round_start = {r.id: r.round_start for r in rows}
        health: dict[str, bool] = {}
        log_rows = []
        for o in outcomes:
            result = {"response_status": o.response_status, "latency_ms": o.latency_ms, "error": o.error}
            log_rows.append(
                {"delivery_id": o.delivery_id, "attempt": o.attempt, "at": at, "ok": o.ok, **result}
            )
            if o.ok:
                kind = "delivered"
                values = {"status": "delivered", "next_attempt_at": None, "delivered_at": at, **result}
            else:
                retry_at = after_failure(o.attempt - round_start[o.delivery_id], at, self.schedule)
                kind = "failed" if retry_at is None else "retrying"
                values = {
                    "status": "failed" if retry_at is None else "pending",
                    "next_attempt_at": retry_at,
                    **result,
                }
            if repo.finish(s, o.delivery_id, o.attempt, **values):
                counts[kind] += 1
            health[o.endpoint_id] = health.get(o.endpoint_id, False) or o.ok
        repo.add_attempts(s, log_rows)
        for endpoint_id, ok in health.items():
            self._health(s, endpoint_id, ok, at)
        return counts

    def _health(self, s: Tx, endpoint_id: str, ok: bool, at: Any) -> None:
        """A success clears the endpoint's failure record; a failure starts it, and disables an
        endpoint whose attempts have all failed for ``disable_after`` seconds."""
        ep = repo.get_endpoint(s, endpoint_id)
        if ep is None:  # deleted while its deliveries were out
            return
        if ok:
            repo.set_endpoint(s, endpoint_id, failing_since=None, last_success_at=at)
            return
        since = ep.failing_since or at
        if ep.failing_since is None:
            repo.set_endpoint(s, endpoint_id, failing_since=at)
        if ep.status == ENABLED and should_disable(since, at, self.disable_after):
            repo.set_endpoint(
                s, endpoint_id, status=DISABLED, disabled_reason="failing", disabled_at=at, updated_at=at
            )
            log.warning(
                "webhook endpoint %s (%s) disabled: failing since %s", endpoint_id, ep.url, iso(since)
            )
            self.events.emit(s, WebhookEndpointDisabled(endpoint_id, ep.url, "failing", iso(since)))

    def close(self) -> None:
        self.sender.close()
