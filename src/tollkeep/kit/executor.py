"""Runs units of work that write, batching them (group commit).

SQLite allows one writer at a time. Instead of letting requests fight over the write lock,
one writer thread per process drains a queue and commits many commands in one transaction:
each command runs inside its own SAVEPOINT, so a command that fails (say, insufficient
credits) rolls back alone, and every caller is answered only after the shared COMMIT, so an
acknowledged command is durable. Other processes (a second server, the CLI) still take the
lock in turn through ``BEGIN IMMEDIATE`` and the busy timeout.

PostgreSQL takes row locks, so it gets several such writer lanes, chosen by the command's key
(the customer): commands for one wallet are batched into one transaction (one commit, one
fsync) instead of queueing one by one on the wallet's row lock, while different customers
proceed in parallel. Serialization failures, deadlocks and unique-key races are retried.

Domain events a command emits (kit/events.py) are delivered after the batch's COMMIT, before its
callers are answered; a command whose savepoint rolled back delivers none.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import suppress
from typing import Any, Generic, NamedTuple, TypeVar

from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from tollkeep.kit import events
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import TollkeepError
from tollkeep.kit.rawsql import driver_cursor

__all__ = ["Command", "WriteExecutor"]

T = TypeVar("T")
log = logging.getLogger("tollkeep.executor")

_STOP = object()


class Command(NamedTuple, Generic[T]):
    """A unit of work and its executor key: the customer whose wallet it touches, which picks
    its lane (PostgreSQL) and its place in a batch's lock order. Services build commands, so
    callers never choose a lane. Calling a command runs it in a transaction the caller already
    holds (a unit of work composed of others, e.g. a customer's sign-up). Immutable (a named
    tuple: the hot path builds one per charge)."""

    fn: Callable[[Tx], T]
    key: str | None = None

    def __call__(self, s: Tx) -> T:
        return self.fn(s)


def _unpack(cmd: Command[T] | Callable[[Tx], T], key: str | None) -> tuple[Callable[[Tx], T], str]:
    if isinstance(cmd, Command):
        return cmd.fn, (cmd.key if key is None else key) or ""
    return cmd, key or ""


def _retryable(exc: BaseException) -> bool:
    """A race lost, worth running the command again alone: a unique-key race, a serialization
    failure, a deadlock, SQLite's busy lock. Raised by SQLAlchemy, or by the driver itself when
    a prebuilt statement ran on the driver cursor (kit/rawsql.py): both are recognised."""
    if isinstance(exc, IntegrityError | sqlite3.IntegrityError):
        return True
    code = getattr(getattr(exc, "orig", None) or exc, "sqlstate", None)
    if isinstance(code, str) and (code.startswith("23") or code in ("40001", "40P01")):
        return True
    if isinstance(exc, OperationalError | DBAPIError | sqlite3.OperationalError):
        return "database is locked" in str(exc)
    return False


class WriteExecutor:
    """Runs write units of work ``fn(session)`` in batches (group commit).

    Commands are queued on *lanes*, each drained by one thread that runs a batch of commands in
    one transaction, each command in its own SAVEPOINT. SQLite has one lane (one writer). On
    PostgreSQL there are several, and a command's ``key`` (the customer) picks its lane, so one
    customer's commands are batched together instead of queueing on their wallet's row lock;
    within a batch commands run in key order, so two batches always lock wallets in the same
    order and cannot deadlock each other.
    """

    def __init__(self, db: Database, *, batch_max: int = 256, workers: int = 16) -> None:
        self.db = db
        self.batch_max = batch_max
        self._closed = False
        n = 1 if db.is_sqlite else max(1, workers // 2)
        self._lanes: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(n)]
        self._threads = [
            threading.Thread(target=self._writer_loop, args=(q,), name=f"tollkeep-writer-{i}", daemon=True)
            for i, q in enumerate(self._lanes)
        ]
        self._next = itertools.count()
        self.batches = 0
        self.commands = 0
        for t in self._threads:
            t.start()

    def _lane(self, key: str) -> queue.SimpleQueue[Any]:
        if len(self._lanes) == 1:
            return self._lanes[0]
        index = hash(key) if key else next(self._next)
        return self._lanes[index % len(self._lanes)]

    # ---- public -------------------------------------------------------------------------------
    # Each takes a Command (which carries its key) or a bare ``fn(session)`` with an optional key
    # (commands of no customer: catalog versions, keys, tests).
    def submit(self, cmd: Command[T] | Callable[[Tx], T], *, key: str | None = None) -> Future[T]:
        if self._closed:
            raise RuntimeError("executor closed")
        fn, k = _unpack(cmd, key)
        fut: Future[T] = Future()
        self._lane(k).put((fn, fut, k))
        return fut

    def call(self, cmd: Command[T] | Callable[[Tx], T], *, key: str | None = None) -> T:
        return self.submit(cmd, key=key).result()

    async def acall(self, cmd: Command[T] | Callable[[Tx], T], *, key: str | None = None) -> T:
        if self._closed:
            raise RuntimeError("executor closed")
        fn, k = _unpack(cmd, key)
        # the writer answers straight into this event loop, one wake-up per batch
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[T] = loop.create_future()
        self._lane(k).put((fn, _LoopWaiter(loop, fut), k))
        return await fut

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for q in self._lanes:
            q.put(_STOP)
        for t in self._threads:
            t.join(timeout=30)

    # ---- one command alone (retries after a lost race) ------------------------------------------
    def _run_alone(self, fn: Callable[[Tx], T]) -> T:
        delay = 0.005
        for attempt in range(8):
            try:
                with self.db.scope(write=True) as session:
                    return fn(session)
            except TollkeepError:
                raise
            except Exception as exc:
                if attempt < 7 and _retryable(exc):
                    time.sleep(delay)
                    delay = min(delay * 2, 0.2)
                    continue
                raise
        raise AssertionError("unreachable")

    # ---- a lane: group commit ----------------------------------------------------------------------
    def _writer_loop(self, lane: queue.SimpleQueue[Any]) -> None:
        while True:
            item = lane.get()
            if item is _STOP:
                return
            batch = [item]
            stop = False
            while len(batch) < self.batch_max:
                try:
                    nxt = lane.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP:
                    stop = True
                    break
                batch.append(nxt)
            try:
                self._run_batch(batch)
            except BaseException as exc:  # never let the lane's thread die with callers waiting
                log.exception("ledger lane failed a batch")
                for _, fut, _key in batch:
                    with suppress(Exception):
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError(str(exc)))
            if stop:
                return

    def _run_batch(self, batch: list[tuple[Callable[[Tx], Any], Any, str]]) -> None:
        batch.sort(key=lambda item: item[2])  # a stable lock order across batches
        live = [(fn, fut) for fn, fut, _ in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        for attempt in range(5):
            outcomes: list[tuple[bool, Any]] = []
            session = self.db.session()
            try:
                if self.db.is_sqlite:
                    session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
                cur, _ = driver_cursor(session)
                # a batch of one needs no savepoint: if it fails, the transaction is rolled back
                alone = len(live) == 1
                failed_alone = False
                for fn, _ in live:
                    # Each command in its own SAVEPOINT, issued on the driver cursor: units of
                    # work run Core statements only, so neither the ORM's nor Core's nested
                    # transaction bookkeeping is needed (both cost more than the command itself).
                    emitted = events.mark(session)
                    if not alone:
                        cur.execute("SAVEPOINT tk_cmd")
                    try:
                        result = fn(session)
                        if not alone:
                            cur.execute("RELEASE SAVEPOINT tk_cmd")
                        outcomes.append((True, result))
                    except Exception as exc:
                        # the command's domain events go with its savepoint
                        events.discard_since(session, emitted)
                        if alone:
                            session.rollback()
                            failed_alone = True
                        else:
                            cur.execute("ROLLBACK TO SAVEPOINT tk_cmd")
                            cur.execute("RELEASE SAVEPOINT tk_cmd")
                        if not isinstance(exc, TollkeepError) and _retryable(exc):
                            # a race lost (unique key, deadlock, serialization): run this command
                            # again alone, in a fresh transaction, once this batch is committed
                            outcomes.append((False, _Retry(exc)))
                        else:
                            outcomes.append((False, exc))
                if not failed_alone:
                    session.commit()
            except Exception as exc:
                with suppress(Exception):  # the connection may be gone; the pool replaces it
                    session.rollback()
                    session.close()
                if _retryable(exc) and attempt < 4:
                    time.sleep(0.01 * (attempt + 1))
                    continue
                log.exception("ledger batch failed")
                for _, fut in live:
                    fut.set_exception(exc)
                return
            committed = events.take(session)
            session.close()
            self.batches += 1
            self.commands += len(live)
            # subscribers hear of the batch's changes once they are committed, and before the
            # callers are answered (a caller sees the reactions to its change done)
            if committed:
                events.deliver(committed)
            wakeups: dict[asyncio.AbstractEventLoop, list[tuple[Any, bool, Any]]] = {}
            for (fn, fut), (ok, value) in zip(live, outcomes, strict=True):
                if isinstance(value, _Retry):
                    self._retry_alone(fn, fut)
                elif isinstance(fut, _LoopWaiter):
                    wakeups.setdefault(fut.loop, []).append((fut.fut, ok, value))
                elif ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
            for loop, results in wakeups.items():
                with suppress(RuntimeError):  # that loop has closed
                    loop.call_soon_threadsafe(_resolve_all, results)
            return

    def _retry_alone(self, fn: Callable[[Tx], Any], fut: Future[Any]) -> None:
        try:
            fut.set_result(self._run_alone(fn))
        except Exception as exc:
            fut.set_exception(exc)


class _LoopWaiter:
    """Stands for a caller awaiting in an event loop. The command runs even if that caller has
    gone away: its result is stored under its idempotency key for the retry."""

    __slots__ = ("fut", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any]) -> None:
        self.loop = loop
        self.fut = fut

    def set_running_or_notify_cancel(self) -> bool:
        return True

    def set_result(self, value: Any) -> None:
        with suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_resolve_all, [(self.fut, True, value)])

    def set_exception(self, exc: BaseException) -> None:
        with suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_resolve_all, [(self.fut, False, exc)])


def _resolve_all(results: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for fut, ok, value in results:
        if fut.done():
            continue
        if ok:
            fut.set_result(value)
        else:
            fut.set_exception(value)


class _Retry:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc
