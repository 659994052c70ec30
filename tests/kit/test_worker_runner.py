"""The worker registry and runner: jobs are registered by name, run on their interval in threads
of their own, survive their own failures, and stop promptly."""

from __future__ import annotations

import threading
import time

import pytest

from tests.factories import eventually
from tollkeep.kit.worker import Job, WorkerRegistry, WorkerRunner


def test_registry_names_jobs_once_and_runs_them_on_demand() -> None:
    calls: list[str] = []
    reg = WorkerRegistry(
        [Job("a", 1.0, lambda: calls.append("a") or 1), Job("b", 2.0, lambda: calls.append("b") or {"n": 2})]
    )
    assert reg.names() == ["a", "b"]
    with pytest.raises(ValueError, match="already registered"):
        reg.register(Job("a", 5.0, lambda: None))
    assert reg.run_once() == {"a": 1, "b": {"n": 2}}
    assert reg.run_once("b") == {"b": {"n": 2}}
    assert calls == ["a", "b", "b"]
    with pytest.raises(KeyError, match="no job named 'c'"):
        reg.run_once("c")
    assert [j.name for j in reg.select(["b"])] == ["b"] and len(reg.select(None)) == 2


def test_a_job_needs_a_positive_interval_and_a_fractional_jitter() -> None:
    with pytest.raises(ValueError):
        Job("x", 0, lambda: None)
    with pytest.raises(ValueError):
        Job("x", 1.0, lambda: None, jitter=2)
    job = Job("x", 1.0, lambda: None, jitter=0.5)
    assert all(1.0 <= job.delay() <= 1.5 for _ in range(100))


def test_a_failing_job_is_retried_and_the_others_keep_running() -> None:
    good = threading.Event()
    counts = {"bad": 0, "good": 0}

    def bad() -> None:
        counts["bad"] += 1
        raise RuntimeError("boom")

    def ok() -> int:
        counts["good"] += 1
        if counts["good"] >= 3:
            good.set()
        return 0

    runner = WorkerRunner([Job("bad", 0.01, bad), Job("good", 0.01, ok)])
    runner.start()
    try:
        assert good.wait(5)
        assert eventually(lambda: counts["bad"] >= 3), "the failing job ran once and died"
        assert runner.running
    finally:
        runner.stop()
    assert runner.failures["bad"] >= 3 and runner.runs["good"] >= 3


def test_stop_is_prompt_while_jobs_wait_for_their_interval() -> None:
    ran = threading.Event()
    runner = WorkerRunner([Job("slow-interval", 3600.0, ran.set)], first_run_now=True)
    runner.start()
    assert ran.wait(5)  # first_run_now: ran at once, now waits an hour
    started = time.monotonic()
    runner.stop()
    assert time.monotonic() - started < 1.0
    assert not runner.running


def test_stop_waits_for_a_run_in_progress_to_finish() -> None:
    inside = threading.Event()
    finished = threading.Event()

    def run() -> None:
        inside.set()
        time.sleep(0.3)
        finished.set()

    runner = WorkerRunner([Job("busy", 0.01, run)])
    runner.start()
    assert inside.wait(5)
    runner.stop()
    assert finished.is_set()
