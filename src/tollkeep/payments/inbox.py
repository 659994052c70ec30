"""The durable webhook inbox: store first, process later.

``receive`` verifies a provider's webhook on its raw body, stores the bytes and the headers
that matter (unique per provider + provider event id), commits, and only then answers 2xx: no
business logic runs before the event is safe on disk, and a duplicate delivery stores nothing.

``process`` (the ``payments.inbox`` job, in ``tollkeep serve`` or ``tollkeep worker``) claims
due pending events - on PostgreSQL with ``FOR UPDATE SKIP LOCKED``, leased so a killed worker's
rows come back - asks the provider what each means (``interpret``) and applies the actions
(:mod:`tollkeep.payments.apply`) in ONE transaction with the row's new status. Delivery is
at-least-once; the effect is exactly-once because every money effect is keyed by the
provider's payment or refund id. A provider outage or a refund of a payment not seen yet
retries with back-off; after ``inbox_max_attempts`` the event is ``failed`` and stays visible;
an event that names something unknown (a pack, a customer) fails at once with the reason and
can be replayed once the catalog is fixed.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from tollkeep.audit import record
from tollkeep.catalog import Catalog
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import NotFound, TollkeepError
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.payments import repository as repo
from tollkeep.payments.apply import Applier, NotYet, Outcome
from tollkeep.payments.providers import Providers
from tollkeep.payments.providers.base import (
    CannotApply,
    PaymentSettled,
    PlanCancelled,
    PlanChanged,
    ProviderUnavailable,
    VerifiedEvent,
    lower_headers,
)

__all__ = ["Inbox", "InboxSettings", "inbox_view"]

log = logging.getLogger("tollkeep.payments.inbox")

PENDING, PROCESSED, IGNORED, FAILED = repo.PENDING, repo.PROCESSED, repo.IGNORED, repo.FAILED
_BOOT = new_id("boot")[-8:]
# every stored webhook takes the same writer lane (PostgreSQL has several; SQLite one): concurrent
# deliveries are committed together, one commit (one fsync) for a batch of them
_STORE_LANE = "payments.inbox.store"


@dataclass(frozen=True)
class InboxSettings:
    max_attempts: int = 8
    retention_days: int = 30
    lease_seconds: float = 60.0
    batch_size: int = 200
    base_backoff_seconds: float = 5.0
    max_backoff_seconds: float = 3600.0


class _LostClaim(Exception):
    """Another worker took this event over (our lease ran out): our effects roll back."""


def inbox_view(row: Any, *, full: bool = False) -> dict[str, Any]:
    out = {
        "id": row.id,
        "provider": row.provider,
        "event_id": row.event_id,
        "type": row.type,
        "status": row.status,
        "attempts": row.attempts,
        "received_at": iso(row.received_at),
        "processed_at": iso(row.processed_at),
        "next_attempt_at": iso(row.available_at) if row.status == PENDING else None,
        "error": row.error,
    }
    if full:
        out["result"] = row.result
        out["headers"] = row.headers
        try:
            out["payload"] = json.loads(row.body)
        except ValueError:
            out["payload"] = None
            out["body"] = bytes(row.body).decode("utf-8", "replace")
    return out


class Inbox:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        providers: Providers,
        applier: Applier,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock,
        settings: InboxSettings | None = None,
        after_commit: Callable[[Outcome], None] | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.providers = providers
        self.applier = applier
        self.catalog = catalog
        self.clock = clock
        self.settings = settings or InboxSettings()
        self.after_commit = after_commit
        self.claimant = f"{socket.gethostname()}:{os.getpid()}:{_BOOT}"
        self._wake = threading.Event()
        self._released_dead_at = 0.0

    # ---- receiving ------------------------------------------------------------------------------
    def _row(
        self, provider: str, event: VerifiedEvent, body: bytes, headers: Mapping[str, str]
    ) -> dict[str, Any]:
        p = self.providers.get(provider)
        handled: frozenset[str] | None = getattr(p, "handled_types", None)
        kept = {k: v for k, v in lower_headers(headers).items() if k in getattr(p, "kept_headers", ())}
        status = IGNORED if handled is not None and event.type not in handled else PENDING
        return {
            "provider": provider,
            "event_id": event.event_id[:255],
            "type": event.type[:128],
            "status": status,
            "body": body,
            "headers": kept,
        }

    def verify(self, provider: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        """Check a webhook (raises SignatureInvalid / MalformedEvent / not configured): the row to
        store. CPU only, no database."""
        p = self.providers.get(provider)
        event = p.verify(body, headers)
        if not event.event_id or not event.type:
            raise TollkeepError("the event has no id or type", code="malformed_event", status=400)
        return self._row(provider, event, body, headers)

    def store_fn(self, row: Mapping[str, Any]) -> Callable[[Tx], dict[str, Any]]:
        def fn(s: Tx) -> dict[str, Any]:
            inbox_id, new = repo.insert_event(s, now=self.clock.now(), **row)
            return {"id": inbox_id, "duplicate": not new, "status": row["status"] if new else None}

        return fn

    def stored(self, answer: dict[str, Any]) -> dict[str, Any]:
        if not answer["duplicate"] and answer["status"] == PENDING:
            self._wake.set()
        return {"received": True, **{k: v for k, v in answer.items() if k != "status"}}

    def receive(self, provider: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        row = self.verify(provider, body, headers)
        return self.stored(self.executor.call(self.store_fn(row), key=_STORE_LANE))

    async def areceive(self, provider: str, body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
        row = self.verify(provider, body, headers)
        return self.stored(await self.executor.acall(self.store_fn(row), key=_STORE_LANE))

    def store_event(self, provider: str, event: VerifiedEvent, body: bytes) -> dict[str, Any]:
        """Store an event that did not come over HTTP (the local provider's page, reconcile)."""
        return self.stored(
            self.executor.call(self.store_fn(self._row(provider, event, body, {})), key=_STORE_LANE)
        )

    # ---- processing -----------------------------------------------------------------------------
    def backoff(self, attempt: int) -> timedelta:
        """After failed attempt n: 5 s, 10 s, 20 s, ... capped at an hour."""
        st = self.settings
        return timedelta(
            seconds=min(st.max_backoff_seconds, st.base_backoff_seconds * 2 ** max(attempt - 1, 0))
        )

    def wait_for_work(self, timeout: float) -> bool:
        """Block until an event is stored in this process or ``timeout`` passes."""
        woke = self._wake.wait(timeout)
        self._wake.clear()
        return woke

    def process(self, *, limit: int | None = None) -> dict[str, int]:
        """Claim a batch of due events and process them; counts by outcome."""
        now = self.clock.now()
        self._release_dead_claims(now)
        with self.db.scope(write=False) as s:
            if not repo.any_due(s, now):
                return {}
        lease = now + timedelta(seconds=self.settings.lease_seconds)
        n = limit or self.settings.batch_size
        rows = self.executor.call(lambda s: repo.claim_events(s, now, lease, n, self.claimant))
        counts: dict[str, int] = {}
        submitted = []
        for row in rows:
            unit, key = self._prepare(row)
            if unit is None:  # failed or deferred while interpreting, recorded there
                counts["not_applied"] = counts.get("not_applied", 0) + 1
            else:  # applied concurrently: the writer commits them in batches
                submitted.append((row, self.executor.submit(unit, key=key)))
        for row, fut in submitted:
            try:
                outcome = fut.result()
            except Exception as exc:  # the unit rolled back: record why, in a transaction of its own
                status = self._failed(row, exc)
            else:
                status = PROCESSED
                if self.after_commit is not None:
                    self.after_commit(outcome)
            counts[status] = counts.get(status, 0) + 1
        return counts

    def _prepare(self, row: Any) -> tuple[Callable[[Tx], Outcome] | None, str | None]:
        """Interpret an event (may call the provider's API): the unit of work that applies it, or
        None when it was settled here (failed, deferred)."""
        try:
            provider = self.providers.get(row.provider)
            event = VerifiedEvent(row.event_id, row.type, json.loads(row.body))
            actions = list(provider.interpret(event, self.catalog()))
        except Exception as exc:
            self._failed(row, exc)
            return None, None
        now = self.clock.now()
        later = [
            a.effective_at
            for a in actions
            if isinstance(a, PlanChanged | PlanCancelled)
            and a.effective_at is not None
            and a.effective_at > now
        ]
        if later:
            at = max(later)
            self.executor.call(
                lambda s: repo.set_event_outcome(
                    s,
                    row.id,
                    status=PENDING,
                    now=now,
                    available_at=at,
                    error=f"scheduled: takes effect at {iso(at)}",
                    claimant=self.claimant,
                )
            )
            return None, None
        apply = self.applier.unit(row.provider, row.id, actions)
        key = next(
            (a.buyer.customer_id for a in actions if isinstance(a, PaymentSettled) and a.buyer.customer_id),
            None,
        )

        def unit(s: Tx) -> Outcome:
            outcome = apply(s)
            result = {"effects": outcome.effects}
            if not repo.set_event_outcome(
                s, row.id, status=PROCESSED, now=self.clock.now(), result=result, claimant=self.claimant
            ):
                raise _LostClaim(row.id)
            return outcome

        return unit, key

    def _failed(self, row: Any, exc: BaseException) -> str:
        if isinstance(exc, _LostClaim):
            log.warning("inbox %s: another worker took it over; its effects are that worker's", row.id)
            return "lost"
        now = self.clock.now()
        reason = exc.message if isinstance(exc, TollkeepError) else f"{type(exc).__name__}: {exc}"
        final = isinstance(exc, CannotApply) or row.attempts >= self.settings.max_attempts
        retryable = isinstance(exc, ProviderUnavailable | NotYet)
        if not final and not retryable:
            log.exception("inbox %s (%s %s) failed, will retry", row.id, row.provider, row.type, exc_info=exc)
        else:
            log.warning("inbox %s (%s %s): %s", row.id, row.provider, row.type, reason)
        status = FAILED if final else PENDING
        self.executor.call(
            lambda s: repo.set_event_outcome(
                s,
                row.id,
                status=status,
                now=now,
                error=reason[:2000],
                available_at=now + self.backoff(row.attempts),
                claimant=self.claimant,
            )
        )
        return status

    def _release_dead_claims(self, now: datetime) -> None:
        """Claims held by a process of this host that no longer runs (killed -9) come back now,
        not when their lease ends. Checked at most every 10 s."""
        if time.monotonic() - self._released_dead_at < 10:
            return
        self._released_dead_at = time.monotonic()
        host = socket.gethostname() + ":"
        with self.db.scope(write=False) as s:
            holders = repo.claimants(s, host)
        dead = []
        for holder in holders:
            if holder == self.claimant:
                continue
            try:
                pid = int(holder.split(":")[1])
                os.kill(pid, 0)
            except ProcessLookupError:
                dead.append(holder)
            except (ValueError, IndexError, PermissionError):
                continue
            else:
                # same pid, another boot: that process restarted (a pid reused by us)
                if pid == os.getpid():
                    dead.append(holder)
        if dead:
            n = self.executor.call(lambda s: repo.release_claims(s, dead, now))
            log.info("inbox: %d events claimed by stopped workers are due again", n)

    # ---- operators ------------------------------------------------------------------------------
    def replay(self, inbox_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        """Process an event again (failed, ignored or processed): its effects are idempotent, so
        a replay of an applied payment changes nothing; of a failed one, applies it now.
        ``actor``: who asked (audited in the same transaction)."""
        now = self.clock.now()

        def fn(s: Tx) -> bool:
            found = bool(repo.replay_event(s, inbox_id, now))
            if found and actor is not None:
                record(s, actor, "inbox.replay", ("inbox_event", inbox_id), at=now)
            return found

        if not self.executor.call(fn):
            raise NotFound(f"inbox event {inbox_id!r} not found", code="inbox_event_not_found")
        self._wake.set()
        return self.show(inbox_id)

    def show(self, inbox_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            row = repo.get_event(s, inbox_id)
        if row is None:
            raise NotFound(f"inbox event {inbox_id!r} not found", code="inbox_event_not_found")
        return inbox_view(row, full=True)

    def prune(self) -> int:
        before = self.clock.now() - timedelta(days=self.settings.retention_days)
        total = 0
        while True:
            n = self.executor.call(lambda s: repo.delete_old_events(s, before, 1000))
            total += n
            if n < 1000:
                return total
