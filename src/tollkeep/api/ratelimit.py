"""The API's rate limits: :mod:`tollkeep.ratelimit` (kept importable from here).

``Limiters`` is :class:`tollkeep.ratelimit.Limits` (``writes``, ``install_ids``, ``admit``)."""

from __future__ import annotations

from tollkeep.ratelimit import Limiter, Limits, RateLimited

__all__ = ["Limiter", "Limiters", "RateLimited"]

Limiters = Limits
