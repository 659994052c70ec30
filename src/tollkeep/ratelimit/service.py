"""Rate limits, quotas and concurrency caps per key and per tool / route (the ``limits``
library): :class:`Limits`, built once per runtime from the settings.

Storage: in memory (per process) by default; in Redis when ``TOLLKEEP_REDIS_URL`` is set, so
every replica counts in the same buckets. Redis calls run off the event loop (a worker
thread); when Redis does not answer, calls are let through (logged once a minute): a rate
limit protects capacity, it must not take the service down with it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

from limits import RateLimitItem, RateLimitItemPerHour, parse_many
from limits.errors import StorageError
from limits.storage import MemoryStorage, RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter, RateLimiter

from tollkeep.config import Settings
from tollkeep.kit.errors import Forbidden, TollkeepError
from tollkeep.ratelimit.domain import Quota, allowed_tool, headers_of, identity, is_off, scope_limit, tightest

__all__ = ["ConcurrencyLimited", "Limiter", "Limits", "Permit", "RateLimited", "ToolNotAllowed"]

log = logging.getLogger("tollkeep.ratelimit")
T = TypeVar("T")


class RateLimited(TollkeepError):
    """429 ``rate_limited``: a rate limit or quota refused the call. ``headers``: Retry-After and
    the RateLimit headers of the limit that refused."""

    code = "rate_limited"
    status = 429

    def __init__(
        self,
        message: str,
        *,
        retry_after: int = 1,
        limit: int | None = None,
        remaining: int = 0,
        reset: int | None = None,
        window: int | None = None,
        code: str | None = None,
    ) -> None:
        details: dict[str, Any] = {"retry_after": retry_after}
        if limit is not None:
            details["limit"] = limit
            details["remaining"] = remaining
            details["reset"] = reset if reset is not None else retry_after
        super().__init__(message, code=code, details=details)
        self.retry_after = retry_after
        self.limit = limit
        self.remaining = remaining
        self.reset = reset if reset is not None else retry_after
        quota = None if limit is None else Quota(limit, remaining, self.reset, window or self.reset)
        self.headers = headers_of(quota, retry_after=retry_after)


class ConcurrencyLimited(RateLimited):
    """429 ``concurrency_limited``: the key already has ``limit`` calls in flight."""

    code = "concurrency_limited"


class ToolNotAllowed(Forbidden):
    """403 ``tool_not_allowed``: the key's tool allowlist does not name this tool or route."""

    code = "tool_not_allowed"


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


class _FailOpen:
    """Lets calls through while the shared storage is down, saying so once a minute."""

    def __init__(self) -> None:
        self._last = 0.0

    def __call__(self, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last > 60:
            self._last = now
            log.warning("rate limit storage unavailable, letting calls through: %s", exc)


@lru_cache(maxsize=1024)
def _items(spec: str) -> tuple[RateLimitItem, ...]:
    """A limits string ("60/minute", "10/second;1000/day"), parsed once; () for "off"."""
    if is_off(spec):
        return ()
    try:
        return tuple(parse_many(spec))
    except ValueError as exc:
        raise ValueError(f"not a rate limit: {spec!r} (e.g. '60/minute'; 'off' disables)") from exc


def _window(item: RateLimitItem) -> int:
    return int(item.get_expiry())


class Limiter:
    """One limit (or several, ``;``-separated) on a storage, keyed by an identifier. ``items``
    empty: no limit. ``hit`` for threads, ``ahit`` on an event loop."""

    def __init__(
        self,
        items: tuple[RateLimitItem, ...] | RateLimitItem | None,
        *,
        moving: bool = False,
        what: str = "requests",
        storage: Storage | None = None,
        run: Callable[[Callable[[], Any]], Any] | None = None,
    ) -> None:
        if isinstance(items, RateLimitItem):
            items = (items,)
        self.items: tuple[RateLimitItem, ...] = items or ()
        self.item = self.items[0] if self.items else None  # the first (older callers read it)
        self.what = what
        self._limiter: RateLimiter | None = None
        if self.items:
            st = storage or _Storage()
            self._limiter = MovingWindowRateLimiter(st) if moving else FixedWindowRateLimiter(st)
        self._remote = storage is not None and not isinstance(storage, MemoryStorage)
        self._fail = _FailOpen()

    @classmethod
    def parse(cls, spec: str | None, **kw: Any) -> Limiter:
        return cls(_items(spec or ""), **kw)

    def hit(self, key: str) -> None:
        """Count one event for ``key``; raise 429 ``rate_limited`` past the limit."""
        if self._limiter is None:
            return
        try:
            for item in self.items:
                if not self._limiter.hit(item, key):
                    reset = self._limiter.get_window_stats(item, key).reset_time
                    retry = max(1, math.ceil(reset - time.time()))
                    raise RateLimited(
                        f"too many {self.what}: the limit is {item}; retry in {retry} s",
                        retry_after=retry,
                        limit=item.amount,
                        remaining=0,
                        reset=retry,
                        window=_window(item),
                    )
        except StorageError as exc:
            self._fail(exc)

    async def ahit(self, key: str) -> None:
        """:meth:`hit` from an event loop (a shared storage is called from a worker thread)."""
        if self._limiter is None:
            return
        if self._remote:
            await asyncio.get_running_loop().run_in_executor(None, self.hit, key)
        else:
            self.hit(key)


@dataclass
class Permit:
    """An admitted call: who (``ident``), in which ``scope``, and where its tightest limit stands
    (``quota``; None: no rate limit applied). :meth:`Limits.headers` turns it into headers."""

    ident: str
    scope: str
    quota: Quota | None = None
    in_flight: int | None = None
    _token: str | None = field(default=None, repr=False)

    @property
    def limit(self) -> int | None:
        return None if self.quota is None else self.quota.limit

    @property
    def remaining(self) -> int | None:
        return None if self.quota is None else self.quota.remaining

    @property
    def reset(self) -> int | None:
        return None if self.quota is None else self.quota.reset


# a call in flight is a member of a sorted set scored by its start (Redis time): members older
# than the TTL (a process that died mid-call) drop out on their own
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
local n = redis.call('ZCARD', KEYS[1])
if n >= tonumber(ARGV[2]) then return -1 end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1])))
return n + 1
"""


class _Inflight:
    """Calls in flight per identifier: a counter in this process, or a sorted set in Redis."""

    def __init__(self, client: Any = None, ttl: float = 300.0) -> None:
        self._client = client
        self._ttl = ttl
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._script = client.register_script(_ACQUIRE) if client is not None else None

    @property
    def remote(self) -> bool:
        return self._client is not None

    def acquire(self, ident: str, cap: int) -> tuple[bool, int, str | None]:
        """(admitted, calls in flight counting this one, the token to release it with)."""
        if self._script is None:
            with self._lock:
                n = self._counts.get(ident, 0)
                if n >= cap:
                    return False, n, None
                self._counts[ident] = n + 1
                return True, n + 1, None
        token = uuid.uuid4().hex
        n = int(self._script(keys=[f"tk:inflight:{ident}"], args=[self._ttl, cap, token]))
        return (n >= 0), (n if n >= 0 else cap), token if n >= 0 else None

    def release(self, ident: str, token: str | None) -> None:
        if self._client is None:
            with self._lock:
                n = self._counts.get(ident, 0) - 1
                if n > 0:
                    self._counts[ident] = n
                else:
                    self._counts.pop(ident, None)
            return
        self._client.zrem(f"tk:inflight:{ident}", token)

    def count(self, ident: str) -> int:
        if self._client is None:
            with self._lock:
                return self._counts.get(ident, 0)
        return int(self._client.zcard(f"tk:inflight:{ident}"))


class _Admission:
    """What :meth:`Limits.admit` returns: an async context manager (a plain class, not a
    generator: it sits on the hot path of every charge)."""

    __slots__ = ("_limits", "_permit", "_scope", "_who")

    def __init__(self, limits: Limits, who: Any, scope: str) -> None:
        self._limits = limits
        self._who = who
        self._scope = scope
        self._permit: Permit | None = None

    async def __aenter__(self) -> Permit:
        self._permit = await self._limits._run(self._limits.enter, self._who, self._scope)
        return self._permit

    async def __aexit__(self, *exc: object) -> None:
        permit = self._permit
        if permit is not None and permit._token is not None:
            await self._limits._run(self._limits.leave, permit)


class Limits:
    """Every rate limit of one runtime (see the package docstring for the contract).

    * ``writes``: usage and hold writes per customer (``TOLLKEEP_RATE_LIMIT_USAGE``);
    * ``install_ids``: new anonymous install ids per client address per hour;
    * :meth:`admit`: a call of a key in a scope (``"tool:<server>/<tool>"``,
      ``"route:<METHOD> <path>"``), counted against the key's own limit (its ``rate_limit``,
      else ``TOLLKEEP_RATE_LIMIT_KEY``), the scope's (``TOLLKEEP_RATE_LIMITS``, per key and
      scope) and its cap on calls in flight (its ``max_concurrency``, else
      ``TOLLKEEP_MAX_CONCURRENCY``).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis_url = settings.redis_url
        self._pool: Any = None
        storage: Storage | None = None
        client: Any = None
        if self.redis_url:
            import redis

            self._pool = redis.ConnectionPool.from_url(
                self.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
            )
            storage = RedisStorage(
                self.redis_url, connection_pool=self._pool, wrap_exceptions=True, key_prefix="tk"
            )
            client = redis.Redis(connection_pool=self._pool)
        self._storage = storage or _Storage()
        self._remote = storage is not None
        self._fixed = FixedWindowRateLimiter(self._storage)
        self._fail = _FailOpen()
        self._inflight = _Inflight(client, ttl=settings.concurrency_ttl_seconds)
        self.writes = Limiter(
            _items(settings.rate_limit_usage), what="usage and hold writes", storage=storage
        )
        n = settings.install_ids_per_ip_per_hour
        self.install_ids = Limiter(
            RateLimitItemPerHour(n) if n > 0 else None,
            moving=True,
            what="new install ids from this address",
            storage=storage,
        )
        self.key_default = settings.rate_limit_key
        self.scopes = dict(settings.rate_limits)
        self.max_concurrency = settings.max_concurrency

    # ---- the tool allowlist ---------------------------------------------------------------------
    @staticmethod
    def allowed_tool(who: Any, name: str) -> bool:
        """May ``who`` (a Principal, or anything with ``tools``) call tool or route ``name``?"""
        return allowed_tool(getattr(who, "tools", None), name)

    def require_tool(self, who: Any, name: str) -> None:
        """403 ``tool_not_allowed`` unless the key's allowlist names ``name``."""
        if not self.allowed_tool(who, name):
            raise ToolNotAllowed(f"this key may not call {name!r}", details={"tool": name})

    # ---- rate limits and the concurrency cap ------------------------------------------------------
    def _rules(self, who: Any, scope: str) -> list[tuple[RateLimitItem, tuple[str, ...]]]:
        ident = identity(who)
        own = getattr(who, "rate_limit", None)
        rules: list[tuple[RateLimitItem, tuple[str, ...]]] = [
            (item, ("k", ident)) for item in _items(own if own is not None else self.key_default)
        ]
        matched = scope_limit(self.scopes, scope) if scope else None
        if matched is not None:
            # the pattern is the bucket: every scope it matches counts in one limit
            rules += [(item, ("s", ident, matched[0])) for item in _items(matched[1])]
        return rules

    def check(self, who: Any, scope: str = "") -> Quota | None:
        """Count one call of ``who`` in ``scope`` against its rate limits (thread-safe, blocking:
        use :meth:`admit` on an event loop). Raises :class:`RateLimited`; returns the tightest
        quota after the call (None: no limit applies)."""
        quotas = []
        try:
            for item, ids in self._rules(who, scope):
                admitted = self._fixed.hit(item, *ids)
                stats = self._fixed.get_window_stats(item, *ids)
                reset = max(1, math.ceil(stats.reset_time - time.time()))
                if not admitted:
                    raise RateLimited(
                        f"rate limited: the limit is {item}"
                        + (f" in {scope}" if ids[0] == "s" else " for this key")
                        + f"; retry in {reset} s",
                        retry_after=reset,
                        limit=item.amount,
                        remaining=0,
                        reset=reset,
                        window=_window(item),
                    )
                quotas.append(Quota(item.amount, stats.remaining, reset, _window(item)))
        except StorageError as exc:
            self._fail(exc)
        return tightest(quotas)

    def enter(self, who: Any, scope: str = "") -> Permit:
        """The blocking half of :meth:`admit`: rate limits, then a slot in flight. Pair it with
        :meth:`leave` (``finally``)."""
        permit = Permit(identity(who), scope, self.check(who, scope))
        cap = getattr(who, "max_concurrency", None) or self.max_concurrency
        if cap:
            try:
                ok, n, token = self._inflight.acquire(permit.ident, cap)
            except Exception as exc:  # Redis down: let the call through, uncounted
                self._fail(exc)
                return permit
            if not ok:
                raise ConcurrencyLimited(
                    f"this key already has {cap} calls in flight; retry when one ends",
                    retry_after=1,
                )
            permit.in_flight = n
            permit._token = token or ""
        return permit

    def leave(self, permit: Permit) -> None:
        """Give back the slot in flight :meth:`enter` took (once; nothing if it took none)."""
        if permit._token is None:
            return
        token, permit._token = permit._token, None
        try:
            self._inflight.release(permit.ident, token or None)
        except Exception as exc:  # the TTL frees it
            self._fail(exc)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._remote:
            return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
        return fn(*args)

    def admit(self, who: Any, scope: str = "") -> _Admission:
        """``async with limits.admit(principal, scope="tool:weather/forecast") as permit:`` —
        count the call against the key's rate limits and take one of its slots in flight for
        the block. Raises :class:`RateLimited` (429 ``rate_limited``) or
        :class:`ConcurrencyLimited` (429 ``concurrency_limited``) before the block runs."""
        return _Admission(self, who, scope)

    async def acquire(self, who: Any, scope: str = "") -> Permit:
        """:meth:`admit` without the block (a call whose end is elsewhere, e.g. a stream):
        release it with :meth:`arelease`, exactly once."""
        return await self._run(self.enter, who, scope)

    async def arelease(self, permit: Permit) -> None:
        if permit._token is not None:
            await self._run(self.leave, permit)

    def in_flight(self, who: Any) -> int:
        """Calls of ``who`` in flight now (this process, or every replica with Redis)."""
        return self._inflight.count(identity(who))

    @staticmethod
    def headers(permit: Permit | None) -> dict[str, str]:
        """The RateLimit headers of an admitted call (empty when no rate limit applied)."""
        return headers_of(permit.quota) if permit is not None else {}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.disconnect()
