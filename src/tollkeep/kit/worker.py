"""Background work, registered rather than hard-coded.

Each domain declares its periodic jobs in its own ``jobs.py`` (a function returning
:class:`Job` objects); the runtime collects them in a :class:`WorkerRegistry`. A
:class:`WorkerRunner` runs every registered job in a thread of its own, every ``interval``
seconds: inside ``tollkeep serve`` (``TOLLKEEP_RUN_WORKERS``) or in a process of their own
(``tollkeep worker``). ``run_once`` runs them now, in the caller's thread (``tollkeep worker
--once``, tests).

A job's run must be safe to run in several processes at once: on PostgreSQL it claims its rows
with ``SELECT ... FOR UPDATE SKIP LOCKED`` (a row another worker holds is left to it, or to the
next run), on SQLite the single writer serializes them. A run that raises is logged and the job
runs again at its next interval; nothing a job does stops the runner.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Job", "WorkerRegistry", "WorkerRunner"]

log = logging.getLogger("tollkeep.worker")


@dataclass(frozen=True)
class Job:
    """A periodic job: ``run()`` every ``interval`` seconds (after the previous run ended), plus a
    random delay of up to ``jitter * interval`` so several workers do not run in step.
    ``run`` returns a small summary of what it did (a count, or a dict of counts)."""

    name: str
    interval: float
    run: Callable[[], Any]
    jitter: float = 0.0
    description: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a job needs a name")
        if self.interval <= 0:
            raise ValueError(f"job {self.name!r}: interval must be > 0 seconds")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"job {self.name!r}: jitter is a fraction of the interval (0-1)")

    def delay(self) -> float:
        return self.interval * (1 + self.jitter * random.random())


def did_something(summary: Any) -> bool:
    """True when a summary reports work done (a non-zero count somewhere)."""
    if isinstance(summary, dict):
        return any(did_something(v) for v in summary.values())
    if isinstance(summary, bool):
        return summary
    if isinstance(summary, int | float):
        return summary != 0
    return summary is not None


class WorkerRegistry:
    """The jobs of one runtime, by name (in registration order)."""

    def __init__(self, jobs: Iterable[Job] = ()) -> None:
        self._jobs: dict[str, Job] = {}
        for job in jobs:
            self.register(job)

    def register(self, job: Job) -> Job:
        if job.name in self._jobs:
            raise ValueError(f"a job named {job.name!r} is already registered")
        self._jobs[job.name] = job
        return job

    def jobs(self) -> list[Job]:
        return list(self._jobs.values())

    def names(self) -> list[str]:
        return list(self._jobs)

    def get(self, name: str) -> Job:
        try:
            return self._jobs[name]
        except KeyError:
            raise KeyError(f"no job named {name!r} (jobs: {', '.join(self._jobs) or 'none'})") from None

    def select(self, names: Iterable[str] | None = None) -> list[Job]:
        """The named jobs (all of them when ``names`` is None or empty); an unknown name raises
        KeyError."""
        wanted = list(names or ())
        return [self.get(n) for n in wanted] if wanted else self.jobs()

    def run_once(self, name: str | None = None) -> dict[str, Any]:
        """Run one job (or every job, in order) now, in this thread; returns each one's summary.
        An error propagates (the caller asked for this run)."""
        return {job.name: job.run() for job in self.select([name] if name else None)}


class WorkerRunner:
    """Runs jobs periodically, one daemon thread per job, until :meth:`stop`."""

    def __init__(self, jobs: Iterable[Job], *, first_run_now: bool = False) -> None:
        self._jobs = list(jobs)
        self._first_run_now = first_run_now
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.runs: dict[str, int] = {j.name: 0 for j in self._jobs}
        self.failures: dict[str, int] = {j.name: 0 for j in self._jobs}

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def start(self) -> None:
        if self._threads:
            return
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._loop, args=(job,), name=f"tollkeep-job-{job.name}", daemon=True)
            for job in self._jobs
        ]
        for t in self._threads:
            t.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Ask every job to stop and wait for them: an idle job stops at once, a running one after
        its current run (each run is bounded work: one batch of rows)."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("jobs still running after %.0f s: %s", timeout, ", ".join(alive))
        self._threads = []

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`stop` is called (or ``timeout``); True once stopped."""
        return self._stop.wait(timeout)

    def _loop(self, job: Job) -> None:
        delay = 0.0 if self._first_run_now else job.delay()
        while not self._stop.wait(delay):
            started = time.monotonic()
            try:
                summary = job.run()
            except Exception:
                self.failures[job.name] += 1
                log.exception("job %s failed; it runs again in %.3g s", job.name, job.interval)
            else:
                self.runs[job.name] += 1
                if did_something(summary):
                    log.info("job %s: %s (%.0f ms)", job.name, summary, (time.monotonic() - started) * 1000)
            delay = job.delay()
