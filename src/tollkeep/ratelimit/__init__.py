"""Rate limits, quotas, concurrency caps and tool allowlists per key and per tool / route.

The contract the gateways (and the public API) use — one :class:`Limits` per runtime,
``tk.limits`` (the app also keeps it as ``app.state.limiters``)::

    limits = tk.limits
    if not limits.allowed_tool(principal, "weather/forecast"):      # the key's allowlist
        ...                                                         # (or limits.require_tool: 403)
    async with limits.admit(principal, scope="tool:weather/forecast") as permit:
        ...                                        # the call; a slot in flight is held meanwhile
    response.headers.update(limits.headers(permit))   # RateLimit-Limit/-Remaining/-Reset/-Policy

``principal`` is a :class:`tollkeep.keys.Principal` (its ``key_id``, ``rate_limit``,
``max_concurrency``, ``tools``), a server caller, or a plain string identifier. ``scope`` names
what is called: ``"tool:<server>/<tool>"`` or ``"route:<METHOD> <path template>"``.

``admit`` raises before the block runs:

* :class:`RateLimited` — 429 ``rate_limited``; ``retry_after``, ``limit``, ``remaining``,
  ``reset`` (seconds), and ``headers`` (``Retry-After`` and the RateLimit headers);
* :class:`ConcurrencyLimited` — 429 ``concurrency_limited`` (a subclass): the key has
  ``max_concurrency`` calls in flight.

For a call whose end is elsewhere (a stream): ``permit = await limits.acquire(...)`` and
``await limits.arelease(permit)`` exactly once. Threads use ``enter`` / ``leave``.

Storage: in memory per process by default (with N replicas a key gets up to N times its
limit); in Redis when ``TOLLKEEP_REDIS_URL`` is set, shared by every replica. See
docs/rate-limits.md.
"""

from tollkeep.ratelimit.domain import Quota, allowed_tool, headers_of, scope_limit
from tollkeep.ratelimit.service import (
    ConcurrencyLimited,
    Limiter,
    Limits,
    Permit,
    RateLimited,
    ToolNotAllowed,
)

__all__ = [
    "ConcurrencyLimited",
    "Limiter",
    "Limits",
    "Permit",
    "Quota",
    "RateLimited",
    "ToolNotAllowed",
    "allowed_tool",
    "headers_of",
    "scope_limit",
]
