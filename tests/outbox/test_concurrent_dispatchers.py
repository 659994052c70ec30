"""Two dispatchers (two runtimes, as two worker processes) draining one outbox at once never
hand out the same event twice: each claim takes disjoint rows (FOR UPDATE SKIP LOCKED on
PostgreSQL, the single writer on SQLite) and leases them before any sink runs."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass

from tests.factories import second_runtime
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.db import Tx
from tollkeep.kit.events import Event
from tollkeep.outbox.service import OutboxMessage
from tollkeep.runtime import Tollkeep

EVENTS = 400


@dataclass(frozen=True)
class Numbered(Event):
    topic = "test.numbered"
    n: int


def test_two_dispatchers_never_deliver_one_event_twice(tk: Tollkeep, db_url: str, clock: FrozenClock) -> None:
    def fill(s: Tx) -> None:
        for n in range(EVENTS):
            tk.outbox.record(s, Numbered(n))

    tk.executor.call(fill)
    delivered: Counter[str] = Counter()
    by: dict[str, int] = {"a": 0, "b": 0}
    lock = threading.Lock()

    def sink_for(name: str) -> object:
        def sink(message: OutboxMessage) -> None:
            time.sleep(0.0005)  # a little work, so the two dispatchers overlap
            with lock:
                delivered[message.id] += 1
                by[name] += 1

        return sink

    with second_runtime(db_url, clock) as other:
        tk.outbox.register_sink("*", sink_for("a"))  # type: ignore[arg-type]
        other.outbox.register_sink("*", sink_for("b"))  # type: ignore[arg-type]
        errors: list[BaseException] = []

        def drain(rt: Tollkeep) -> None:
            try:
                while rt.outbox.dispatch(limit=25)["delivered"]:
                    pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=drain, args=(rt,)) for rt in (tk, other, tk, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
    assert len(delivered) == EVENTS, "an event was never delivered"
    assert set(delivered.values()) == {1}, "an event was delivered twice"
    assert by["a"] > 0 and by["b"] > 0, by
    assert tk.outbox.pending() == 0
