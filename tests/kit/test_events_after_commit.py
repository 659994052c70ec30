"""Domain events reach their subscribers only after the transaction that emitted them commits:
never for a rolled-back one, nor for a command whose savepoint rolled back inside a group commit
(while the batch's other commands deliver theirs)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from tollkeep.customers.events import CustomerStatusChanged
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import Conflict
from tollkeep.kit.events import Event, EventBus
from tollkeep.runtime import Tollkeep


@dataclass(frozen=True)
class Pinged(Event):
    topic = "test.pinged"
    n: int


@dataclass(frozen=True)
class PingedLoudly(Pinged):
    topic = "test.pinged_loudly"


class Recorder:
    def __init__(self, bus: EventBus, event_type: type[Event] = Pinged) -> None:
        self.seen: list[Any] = []
        bus.subscribe(event_type, self.seen.append)


def ping(bus: EventBus, n: int, *, fail: bool = False) -> Any:
    def fn(s: Tx) -> int:
        s.execute(text("SELECT 1"))
        bus.emit(s, Pinged(n))
        if fail:
            raise Conflict("no", code="test_failure")
        return n

    return fn


def test_a_failing_command_in_a_batch_publishes_nothing_and_its_neighbours_do(tk: Tollkeep) -> None:
    bus = EventBus()
    rec = Recorder(bus)
    started, release = threading.Event(), threading.Event()

    def block(s: Tx) -> None:
        started.set()
        release.wait(5)

    # hold the lane busy so the next three commands are taken as one batch
    blocker = tk.executor.submit(block, key="k")
    assert started.wait(5)
    batches = tk.executor.batches
    futures = [
        tk.executor.submit(ping(bus, 1), key="k"),
        tk.executor.submit(ping(bus, 2, fail=True), key="k"),
        tk.executor.submit(ping(bus, 3), key="k"),
    ]
    release.set()
    blocker.result()
    assert futures[0].result() == 1 and futures[2].result() == 3
    with pytest.raises(Conflict):
        futures[1].result()
    assert sorted(e.n for e in rec.seen) == [1, 3]
    assert tk.executor.batches - batches == 2  # the blocker's batch, then the three together


def test_a_failing_command_alone_publishes_nothing(tk: Tollkeep) -> None:
    bus = EventBus()
    rec = Recorder(bus)
    with pytest.raises(Conflict):
        tk.executor.call(ping(bus, 1, fail=True))
    assert rec.seen == []
    assert tk.executor.call(ping(bus, 2)) == 2
    assert [e.n for e in rec.seen] == [2]


def test_subscribers_run_after_the_commit_not_inside_the_transaction(tk: Tollkeep) -> None:
    bus = EventBus()
    committed: list[bool] = []

    def fn(s: Tx) -> None:
        s.execute(text("CREATE TABLE IF NOT EXISTS t_after (n INTEGER)"))
        s.execute(text("INSERT INTO t_after VALUES (7)"))
        bus.emit(s, Pinged(7))

    def handler(event: Pinged) -> None:
        # another connection sees the row: the change is committed when subscribers hear of it
        with tk.db.scope(write=False) as s:
            committed.append(s.execute(text("SELECT count(*) FROM t_after WHERE n = 7")).scalar() == 1)

    bus.subscribe(Pinged, handler)
    tk.executor.call(fn)
    assert committed == [True]


def test_the_session_scope_publishes_after_commit_and_drops_on_rollback(tk: Tollkeep) -> None:
    bus = EventBus()
    rec = Recorder(bus)
    with pytest.raises(RuntimeError), tk.db.scope() as s:
        bus.emit(s, Pinged(1))
        raise RuntimeError("rolled back")
    assert rec.seen == []
    with tk.db.scope() as s:
        bus.emit(s, Pinged(2))
        assert rec.seen == []  # not before the commit
    assert [e.n for e in rec.seen] == [2]


def test_a_subscriber_that_raises_does_not_stop_the_others() -> None:
    bus = EventBus()
    heard: list[int] = []

    def broken(event: Pinged) -> None:
        raise RuntimeError("subscriber bug")

    bus.subscribe(Pinged, broken)
    bus.subscribe(Pinged, lambda e: heard.append(e.n))
    bus.publish(Pinged(1))  # the broken subscriber is logged, the next one still hears it
    assert heard == [1]


def test_an_in_transaction_hook_that_fails_fails_the_change(tk: Tollkeep) -> None:
    bus = EventBus()
    rec = Recorder(bus)

    def refuse(tx: Tx, event: Pinged) -> None:
        raise RuntimeError("cannot record")

    bus.subscribe_in_tx(Pinged, refuse)

    def fn(s: Tx) -> None:
        s.execute(text("CREATE TABLE IF NOT EXISTS t_hook (n INTEGER)"))
        s.execute(text("INSERT INTO t_hook VALUES (1)"))
        bus.emit(s, Pinged(1))

    tk.executor.call(lambda s: s.execute(text("CREATE TABLE IF NOT EXISTS t_hook (n INTEGER)")))
    with pytest.raises(RuntimeError, match="cannot record"):
        tk.executor.call(fn)
    with tk.db.scope(write=False) as s:
        assert s.execute(text("SELECT count(*) FROM t_hook")).scalar() == 0
    assert rec.seen == []


def test_a_subscriber_to_a_base_type_hears_its_subclasses() -> None:
    bus = EventBus()
    base = Recorder(bus, Pinged)
    loud = Recorder(bus, PingedLoudly)
    bus.publish(Pinged(1))
    bus.publish(PingedLoudly(2))
    assert [e.n for e in base.seen] == [1, 2] and [e.n for e in loud.seen] == [2]


def test_customer_status_changes_are_announced_once_per_change(tk: Tollkeep) -> None:
    seen: list[CustomerStatusChanged] = []
    tk.events.subscribe(CustomerStatusChanged, seen.append)
    cid = tk.customers.create("announced")["id"]
    tk.customers.update(cid, status="suspended")
    tk.customers.update(cid, status="suspended")  # no change: no event
    tk.customers.update(cid, name="Renamed")
    tk.customers.update(cid, status="active")
    assert seen == [
        CustomerStatusChanged(cid, "suspended", "active"),
        CustomerStatusChanged(cid, "active", "suspended"),
    ]
