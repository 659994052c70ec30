"""The sweeper and allowance renewal are jobs the ledger and plans domains register: the
runtime's workers run them in the background on their interval (as `serve` does), and
`run_once` runs them now."""

from __future__ import annotations

from datetime import timedelta

from tests.factories import eventually, second_runtime
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def test_the_ledger_registers_its_jobs_on_the_sweeper_interval(tk: Tollkeep) -> None:
    jobs = {j.name: j for j in tk.workers.jobs()}
    assert {"ledger.sweep", "plans.renew_allowances", "outbox.dispatch"} <= set(jobs)
    every = tk.settings.sweeper_interval_seconds
    assert jobs["ledger.sweep"].interval == jobs["plans.renew_allowances"].interval == every
    assert jobs["outbox.dispatch"].interval == tk.settings.outbox_interval_seconds


def test_started_workers_release_expired_holds_in_the_background(db_url: str, clock: FrozenClock) -> None:
    with second_runtime(db_url, clock, sweeper_interval_seconds=0.05) as rt:
        cid = str(rt.customers.create("background")["id"])
        rt.ledger.grant(cid, 10, idempotency_key="buy")
        hold = rt.ledger.create_hold(cid, idempotency_key="h", amount=4, ttl_seconds=30)
        rt.start_workers()
        clock.advance(timedelta(minutes=1))
        assert eventually(lambda: rt.hold(cid, hold["id"])["status"] == "expired")
        assert rt.balance(cid)["balance"] == 10
        rt.stop_workers(timeout=5)
        assert rt.verify().ok


def test_run_once_sweeps_now(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = str(tk.customers.create("on-demand")["id"])
    tk.ledger.grant(cid, 10, idempotency_key="buy")
    tk.ledger.create_hold(cid, idempotency_key="h", amount=4, ttl_seconds=30)
    clock.advance(timedelta(minutes=1))
    assert tk.workers.run_once("ledger.sweep") == {"ledger.sweep": {"holds_released": 1, "grants_expired": 0}}
    assert tk.workers.run_once("ledger.sweep")["ledger.sweep"]["holds_released"] == 0
