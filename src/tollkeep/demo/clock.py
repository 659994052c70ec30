"""The demo's fast clock: real time minus an offset that only shrinks (like the test clock,
``TOLLKEEP_TEST_CLOCK``, moved by hand), used by ``tollkeep demo`` only.

The demo starts a month in the past, walks a subscription through a renewal by jumping the
clock forward, then catches up with real time before it serves, so the server, the gateways
(processes with the system clock) and the data all agree on what "now" is."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta

from tollkeep.kit.clock import Clock, SystemClock

__all__ = ["DemoClock"]


class DemoClock(Clock):
    def __init__(self, behind: timedelta, base: Clock | None = None) -> None:
        if behind < timedelta(0):
            raise ValueError("the demo clock starts in the past, never in the future")
        self.base = base or SystemClock()
        self._behind = behind
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self.base.now() - self._behind

    def advance_to(self, when: datetime) -> datetime:
        """Jump forward to ``when`` (never past real time, never backwards)."""
        with self._lock:
            real = self.base.now()
            self._behind = min(self._behind, max(timedelta(0), real - when))
            return real - self._behind

    def catch_up(self) -> datetime:
        """Real time from now on."""
        with self._lock:
            self._behind = timedelta(0)
            return self.base.now()
