"""The dispatcher hands each committed outbox event to the sinks of its topic, once; a failing
sink gets it again after a back-off; a claimed batch is leased, so a dispatcher that dies gives
its rows back only when the lease ends; an idle dispatcher writes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tollkeep.kit.clock import FrozenClock
from tollkeep.outbox import repository as outbox_repo
from tollkeep.outbox.service import OutboxMessage
from tollkeep.runtime import Tollkeep


class Sink:
    def __init__(self, *, fail: int = 0) -> None:
        self.got: list[OutboxMessage] = []
        self.fail = fail

    def __call__(self, message: OutboxMessage) -> None:
        if self.fail > 0:
            self.fail -= 1
            raise ConnectionError("endpoint down")
        self.got.append(message)


def suspend_and_grant(tk: Tollkeep, ext: str) -> str:
    cid = str(tk.customers.create(ext)["id"])
    tk.customers.update(cid, status="suspended")
    tk.customers.update(cid, status="active")
    tk.ledger.grant(cid, 7, idempotency_key=f"g-{ext}")
    return cid


def test_each_event_is_delivered_once_to_the_sinks_of_its_topic(tk: Tollkeep) -> None:
    every, grants = Sink(), Sink()
    tk.outbox.register_sink("*", every)
    tk.outbox.register_sink("credits.granted", grants)
    cid = suspend_and_grant(tk, "dispatched")
    assert tk.outbox.dispatch() == {"delivered": 4, "failed": 0}
    assert [m.topic for m in every.got] == [
        "customer.created",
        "customer.status_changed",
        "customer.status_changed",
        "credits.granted",
    ]
    assert [m.payload["status"] for m in every.got[1:3]] == ["suspended", "active"]
    assert [m.topic for m in grants.got] == ["credits.granted"] and grants.got[0].customer_id == cid
    assert all(m.attempt == 1 for m in every.got)
    assert tk.outbox.dispatch() == {"delivered": 0, "failed": 0}
    assert len(every.got) == 4 and len(grants.got) == 1
    assert tk.outbox.pending() == 0
    assert all(r["delivered_at"] is not None for r in tk.outbox.recent())


def test_events_nobody_listens_to_are_marked_delivered(tk: Tollkeep) -> None:
    suspend_and_grant(tk, "unheard")
    assert tk.outbox.dispatch() == {"delivered": 4, "failed": 0}
    assert tk.outbox.pending() == 0


def test_a_failing_sink_gets_the_event_again_after_a_back_off(tk: Tollkeep, clock: FrozenClock) -> None:
    flaky, steady = Sink(fail=2), Sink()
    tk.outbox.register_sink("credits.granted", flaky)
    tk.outbox.register_sink("credits.granted", steady)
    cid = tk.customers.create("flaky")["id"]
    tk.ledger.grant(cid, 3, idempotency_key="g")
    # customer.created has no sink here: delivered as it is
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 1}
    (row,) = tk.outbox.recent(pending=True)
    assert row["attempts"] == 1 and "ConnectionError: endpoint down" in row["last_error"]
    assert tk.outbox.dispatch() == {"delivered": 0, "failed": 0}  # backing off: not due yet
    clock.advance(timedelta(seconds=5))
    assert tk.outbox.dispatch() == {"delivered": 0, "failed": 1}  # second attempt fails too
    clock.advance(timedelta(seconds=5))
    assert tk.outbox.dispatch() == {"delivered": 0, "failed": 0}  # the back-off doubled: 10 s
    clock.advance(timedelta(seconds=5))
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 0}
    assert [m.attempt for m in flaky.got] == [3]
    # the steady sink saw every attempt (at least once): it deduplicates on the stable id
    assert [m.attempt for m in steady.got] == [1, 2, 3] and len({m.id for m in steady.got}) == 1
    assert tk.outbox.recent()[0]["last_error"] is None


def test_back_off_grows_and_is_capped(tk: Tollkeep) -> None:
    delays = [tk.outbox.backoff(n).total_seconds() for n in (1, 2, 3, 4, 30)]
    assert delays == [5, 10, 20, 40, 3600]


def test_a_claimed_batch_is_leased_until_its_dispatcher_settles_it(tk: Tollkeep, clock: FrozenClock) -> None:
    sink = Sink()
    cid = tk.customers.create("leased")["id"]
    tk.outbox.dispatch()  # customer.created, before the sink listens
    tk.outbox.register_sink("*", sink)
    tk.ledger.grant(cid, 3, idempotency_key="g")
    now = clock.now()
    # a dispatcher claims the row and dies before delivering it
    claimed = tk.executor.call(lambda s: outbox_repo.claim(s, now, now + tk.outbox.lease, 10))
    assert len(claimed) == 1 and claimed[0].attempts == 1
    assert tk.outbox.dispatch() == {"delivered": 0, "failed": 0}  # leased to the dead one
    clock.advance(tk.outbox.lease)
    assert tk.outbox.dispatch() == {"delivered": 1, "failed": 0}
    assert [m.attempt for m in sink.got] == [2]


def test_an_idle_dispatcher_writes_nothing(tk: Tollkeep) -> None:
    batches = tk.executor.batches
    for _ in range(5):
        assert tk.outbox.dispatch() == {"delivered": 0, "failed": 0}
    assert tk.executor.batches == batches


def test_unregistered_sinks_hear_nothing_more(tk: Tollkeep) -> None:
    sink = Sink()
    tk.outbox.register_sink("*", sink)
    tk.outbox.unregister_sink("*", sink)
    suspend_and_grant(tk, "unregistered")
    tk.outbox.dispatch()
    assert sink.got == []


@pytest.mark.parametrize("limit", [1, 2])
def test_dispatch_takes_at_most_a_batch(tk: Tollkeep, limit: int) -> None:
    suspend_and_grant(tk, f"batch-{limit}")
    assert tk.outbox.dispatch(limit=limit)["delivered"] == limit
    assert tk.outbox.pending() == 4 - limit
