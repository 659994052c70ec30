"""Several deliverers on one PostgreSQL database (two runtimes, as two worker processes would
be, two threads each) never send one delivery twice: the claim takes rows FOR UPDATE SKIP
LOCKED and leases them. And a deliverer that dies holding a lease gives its rows back when
the lease ends."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from tests.factories import second_runtime
from tests.webhooks.receiver import Receiver, pump
from tollkeep.kit.actor import Actor, Role
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.ids import new_id
from tollkeep.outbox import OutboxMessage
from tollkeep.runtime import Tollkeep
from tollkeep.webhooks import repository as webhooks_repo

ADMIN = Actor("admin", "env", Role.ADMIN)
N = 120


def test_two_runtimes_never_send_a_delivery_twice(
    pg_schema_url: str, clock: FrozenClock, receiver: Receiver
) -> None:
    with (
        second_runtime(pg_schema_url, clock, webhooks_allow_private=True) as one,
        second_runtime(pg_schema_url, clock, webhooks_allow_private=True) as two,
    ):
        ep = one.webhooks.create(receiver.url, actor=ADMIN)
        now = clock.now()
        for i in range(N):  # the real sink, with events as the outbox hands them out
            one.webhooks.fan_out(OutboxMessage(new_id("evt"), "credits.granted", None, {"n": i}, now, 1))
        receiver.delay = 0.005  # slow enough for the claims to overlap
        errors: list[BaseException] = []

        def work(tk: Tollkeep) -> None:
            try:
                while tk.webhooks.deliver(limit=10) != {"delivered": 0, "retrying": 0, "failed": 0}:
                    pass
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(tk,)) for tk in (one, two, one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        page = one.webhooks.deliveries(ep["id"], limit=500)["data"]
        assert {(d["status"], d["attempts"], d["error"]) for d in page} == {("delivered", 1, None)}
        sent = Counter(r.id for r in receiver.got)
        assert len(sent) == N and set(sent.values()) == {1}, sent.most_common(3)
        assert len(page) == N
        for r in receiver.got[:5]:
            r.verify(ep["secret"])


def test_a_dead_deliverers_lease_runs_out(wtk: Tollkeep, clock: FrozenClock, receiver: Receiver) -> None:
    ep = wtk.webhooks.create(receiver.url, actor=ADMIN)
    wtk.customers.create("leased")
    wtk.outbox.dispatch()
    now = clock.now()
    # a deliverer claims the delivery and dies before sending it
    (claimed,) = wtk.executor.call(lambda s: webhooks_repo.claim(s, now, now + wtk.webhooks.lease, 10))
    assert claimed.attempt == 1
    assert pump(wtk)["delivered"] == 0 and receiver.got == []
    (d,) = wtk.webhooks.deliveries(ep["id"])["data"]
    assert d["status"] == "sending"
    clock.advance(wtk.webhooks.lease + timedelta(seconds=1))
    assert pump(wtk)["delivered"] == 1
    assert wtk.webhooks.deliveries(ep["id"])["data"][0]["attempts"] == 2
    # the dead deliverer's outcome, had it come back, no longer counts
    assert not wtk.executor.call(lambda s: webhooks_repo.finish(s, d["id"], 1, status="failed"))
