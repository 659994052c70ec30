"""Idempotent gateway calls: a call carrying an idempotency key runs (and is charged) once per
customer; a retry with the same key and the same request gets the stored result back without
reaching the upstream; the same key with another request is a 409-like conflict.

The row is claimed in the same transaction as the call's hold (``claim`` runs before it), and
its result stored in the same transaction as the settle (``done``), so "charged" and
"replayable" are one fact. A failed call (released, not charged) leaves the row ``failed``: a
retry runs it again as the next attempt, with a hold key of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from tollkeep.gateway import repository as repo
from tollkeep.kit.clock import Clock
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Conflict, IdempotencyConflict

__all__ = ["CallKey", "Calls", "request_hash"]

PENDING, DONE, FAILED = "pending", "done", "failed"


def request_hash(target: str, arguments: Any) -> str:
    """The fingerprint of a call: its target and its arguments (canonical JSON)."""
    body = json.dumps([target, arguments], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CallKey:
    """A call's idempotency key, its fingerprint and the attempt the caller expects to run."""

    customer_id: str
    key: str
    hash: str
    target: str
    attempt: int = 1
    call_id: str | None = None  # the row of an earlier, failed or abandoned, attempt


class Calls:
    def __init__(self, db: Database, clock: Clock) -> None:
        self.db = db
        self.clock = clock

    def lookup(
        self, customer_id: str, key: str, target: str, arguments: Any
    ) -> tuple[CallKey, dict[str, Any] | None]:
        """(the call to run, None) or (its key, the stored result to replay). A read session.
        Raises ``idempotency_conflict`` (the key was used for another request) or
        ``call_in_progress`` (the first call with this key has not finished)."""
        h = request_hash(target, arguments)
        with self.db.scope(write=False) as s:
            row = repo.find_call(s, customer_id, key)
        if row is None:
            return CallKey(customer_id, key, h, target), None
        self._same_request(row, h, key)
        if row.status == DONE:
            return CallKey(customer_id, key, h, target, row.attempt, row.id), dict(row.result or {})
        if row.status == PENDING and row.expires_at > self.clock.now():
            raise _in_progress(key)
        return CallKey(customer_id, key, h, target, row.attempt + 1, row.id), None

    def claim(self, call: CallKey, ttl_seconds: int) -> Callable[[Tx], None]:
        """The unit-of-work step that marks ``call`` running (before its hold, same transaction).
        A concurrent retry that claimed it first makes this one ``call_in_progress``."""

        def fn(s: Tx) -> None:
            now = self.clock.now()
            expires = now + timedelta(seconds=ttl_seconds)
            row = repo.find_call(s, call.customer_id, call.key)
            if row is None:
                if call.call_id is not None:
                    raise _in_progress(call.key)
                repo.insert_call(
                    s,
                    customer_id=call.customer_id,
                    idempotency_key=call.key,
                    request_hash=call.hash,
                    target=call.target,
                    expires_at=expires,
                    now=now,
                )
                return
            self._same_request(row, call.hash, call.key)
            if row.id != call.call_id or row.attempt + 1 != call.attempt or row.status == DONE:
                raise _in_progress(call.key)
            if row.status == PENDING and row.expires_at > now:
                raise _in_progress(call.key)
            repo.update_call(
                s,
                row.id,
                status=PENDING,
                attempt=call.attempt,
                hold_id=None,
                expires_at=expires,
                updated_at=now,
            )

        return fn

    def done(self, call: CallKey, result: dict[str, Any]) -> Callable[[Tx, dict[str, Any] | None], None]:
        """The step that stores the delivered result (in the settle's transaction)."""

        def fn(s: Tx, answer: dict[str, Any] | None) -> None:
            row = repo.find_call(s, call.customer_id, call.key)
            if row is None:
                return
            charged = answer.get("charged") if answer else None
            hold_id = answer.get("id") if answer else None
            repo.update_call(
                s,
                row.id,
                status=DONE,
                result=result,
                hold_id=hold_id,
                charged=charged if isinstance(charged, int) else 0,
                updated_at=self.clock.now(),
            )

        return fn

    def failed(self, call: CallKey) -> Callable[[Tx, dict[str, Any] | None], None]:
        """The step that marks the call failed (in the release's transaction): a retry runs it."""

        def fn(s: Tx, answer: dict[str, Any] | None) -> None:
            row = repo.find_call(s, call.customer_id, call.key)
            if row is not None and row.status == PENDING:
                repo.update_call(s, row.id, status=FAILED, updated_at=self.clock.now())

        return fn

    @staticmethod
    def _same_request(row: Any, h: str, key: str) -> None:
        if row.request_hash != h:
            raise IdempotencyConflict(
                f"idempotency key {key!r} was used for another call (other tool or arguments)",
                code="idempotency_conflict",
            )


def _in_progress(key: str) -> Conflict:
    return Conflict(
        f"a call with idempotency key {key!r} is still running: retry when it has finished",
        code="call_in_progress",
    )
