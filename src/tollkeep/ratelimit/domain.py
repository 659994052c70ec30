"""The pure rules of rate limiting: which scopes a limit covers, which tools a key may call, and
the headers a permit shows. No storage, no clock, no web framework."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

__all__ = ["OFF", "Quota", "allowed_tool", "headers_of", "identity", "is_off", "scope_limit", "tightest"]

OFF = frozenset({"", "off", "none", "0", "false", "no"})


def is_off(spec: str | None) -> bool:
    return spec is None or spec.strip().lower() in OFF


def allowed_tool(tools: Iterable[str] | None, name: str) -> bool:
    """May a key whose allowlist is ``tools`` (None: no allowlist) call ``name``? Each entry is
    a name or a glob pattern (``*``, ``?``, ``[…]``), matched case-sensitively against the whole
    name: ``"weather/*"``, ``"GET /v1/search*"``. An empty list allows nothing."""
    if tools is None:
        return True
    return any(t == name or fnmatchcase(name, t) for t in tools)


def scope_limit(patterns: Mapping[str, str], scope: str) -> tuple[str, str] | None:
    """The ``(pattern, limit)`` of the first pattern (in the given order) matching ``scope``, or
    None. Patterns are globs over the whole scope: ``"tool:weather/*"``, ``"route:POST /v1/*"``."""
    for pattern, limit in patterns.items():
        if pattern == scope or fnmatchcase(scope, pattern):
            return pattern, limit
    return None


@dataclass(frozen=True, slots=True)
class Quota:
    """Where one limit stands after a call: ``limit`` calls per ``window`` seconds, ``remaining``
    of them left, the window resetting ``reset`` seconds from now (rounded up)."""

    limit: int
    remaining: int
    reset: int
    window: int


def tightest(quotas: Iterable[Quota]) -> Quota | None:
    """The quota closest to refusing (fewest remaining; then the latest reset): the one the
    headers show."""
    best: Quota | None = None
    for q in quotas:
        if best is None or (q.remaining, -q.reset) < (best.remaining, -best.reset):
            best = q
    return best


def headers_of(quota: Quota | None, *, retry_after: float | None = None) -> dict[str, str]:
    """IETF RateLimit headers (draft-ietf-httpapi-ratelimit-headers): ``RateLimit-Limit``,
    ``RateLimit-Remaining``, ``RateLimit-Reset`` (seconds), ``RateLimit-Policy``
    (``<limit>;w=<window seconds>``), and ``Retry-After`` (seconds) on a refusal."""
    out: dict[str, str] = {}
    if quota is not None:
        out["RateLimit-Limit"] = str(quota.limit)
        out["RateLimit-Remaining"] = str(max(quota.remaining, 0))
        out["RateLimit-Reset"] = str(max(quota.reset, 0))
        out["RateLimit-Policy"] = f"{quota.limit};w={quota.window}"
    if retry_after is not None:
        out["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return out


def identity(who: Any) -> str:
    """The bucket a caller's limits count in: its key's id (an API key's ``key_…``, a server
    key's own id), or for a caller without a key (an anonymous install id) its customer; a
    plain string is used as it is."""
    if isinstance(who, str):
        return who
    key_id = getattr(who, "key_id", None)
    if key_id:
        return str(key_id)
    return f"customer:{getattr(who, 'customer_id', 'unknown')}"
