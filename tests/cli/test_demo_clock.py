"""The demo's fast clock: starts behind real time, only moves forward, never past real time."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tollkeep.demo.clock import DemoClock
from tollkeep.kit.clock import FrozenClock


def test_the_demo_clock_jumps_forward_and_catches_up() -> None:
    real = FrozenClock()
    clock = DemoClock(timedelta(days=32), base=real)
    start = clock.now()
    assert real.now() - start == timedelta(days=32)
    assert clock.advance_to(start + timedelta(days=30)) == start + timedelta(days=30)
    assert clock.advance_to(start) == start + timedelta(days=30)  # never backwards
    assert clock.advance_to(real.now() + timedelta(days=5)) == real.now()  # never past real time
    real.advance(timedelta(seconds=7))
    assert clock.catch_up() == clock.now() == real.now()
    with pytest.raises(ValueError):
        DemoClock(timedelta(days=-1))
