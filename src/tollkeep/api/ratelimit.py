"""Per-process rate limits (the ``limits`` library, in memory): 429 ``rate_limited`` with a
``Retry-After`` header.

* writes of usage and holds, per customer (``TOLLKEEP_RATE_LIMIT_USAGE``): zero-priced events
  count like any other, so nobody stores events for free at line rate;
* new anonymous install ids, per client address (``TOLLKEEP_INSTALL_IDS_PER_IP_PER_HOUR``).

Limits are per server process: with N replicas a customer gets up to N times the limit.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, RateLimitItemPerHour, parse
from limits.storage import MemoryStorage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from tollkeep.config import Settings
from tollkeep.kit.errors import TollkeepError

__all__ = ["Limiter", "Limiters", "RateLimited"]

OFF = {"", "off", "none", "0", "false", "no"}


class _Storage(MemoryStorage):
    """``limits``' memory storage without its expiry timer: the stock one starts a new thread
    (``threading.Timer``) whenever its last one has finished, i.e. up to a hundred times a
    second under load, each start blocking the event loop for about a millisecond. Expired
    counters are dropped when read anyway; the rest are swept here at most once a minute."""

    SWEEP_EVERY = 60.0

    def __init__(self) -> None:
        super().__init__()
        self._next_sweep = time.monotonic() + self.SWEEP_EVERY

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer-starting original
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_EVERY
            self._MemoryStorage__expire_events()  # type: ignore[attr-defined]


class RateLimited(TollkeepError):
    code = "rate_limited"
    status = 429


class Limiter:
    """One limit, keyed by an identifier. ``item`` None: no limit."""

    def __init__(self, item: RateLimitItem | None, *, moving: bool = False, what: str = "requests") -> None:
        self.item = item
        self.what = what
        self._limiter: RateLimiter | None = None
        if item is not None:
            storage = _Storage()
            self._limiter = MovingWindowRateLimiter(storage) if moving else FixedWindowRateLimiter(storage)

    @classmethod
    def parse(cls, spec: str | None, **kw: object) -> Limiter:
        text = (spec or "").strip()
        if text.lower() in OFF:
            return cls(None)
        try:
            item = parse(text)
        except ValueError as exc:
            raise ValueError(f"not a rate limit: {text!r} (e.g. '100/second'; 'off' disables)") from exc
        return cls(item, **kw)  # type: ignore[arg-type]

    def hit(self, key: str) -> None:
        """Count one event for ``key``; raise 429 ``rate_limited`` past the limit."""
        if self._limiter is None or self.item is None:
            return
        if self._limiter.hit(self.item, key):
            return
        reset = self._limiter.get_window_stats(self.item, key).reset_time
        retry = max(1, math.ceil(reset - time.time()))
        raise RateLimited(
            f"too many {self.what}: the limit is {self.item}; retry in {retry} s",
            details={"retry_after": retry},
        )


class Limiters:
    """The limits of one app, built from its settings."""

    def __init__(self, settings: Settings) -> None:
        self.writes = Limiter.parse(settings.rate_limit_usage, what="usage and hold writes")
        n = settings.install_ids_per_ip_per_hour
        self.install_ids = Limiter(
            RateLimitItemPerHour(n) if n > 0 else None, moving=True, what="new install ids from this address"
        )
