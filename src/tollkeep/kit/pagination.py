"""Cursor pagination: ``?limit=&after=``; responses carry ``next`` (the cursor) or null."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["MAX_LIMIT", "clamp_limit", "page"]

MAX_LIMIT = 500


def clamp_limit(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    return max(1, min(int(limit), MAX_LIMIT))


def page(items: Sequence[dict[str, Any]], limit: int, cursor_field: str = "id") -> dict[str, Any]:
    """``items`` was fetched with limit+1 rows; trim and say where the next page starts."""
    more = len(items) > limit
    data = list(items[:limit])
    return {"data": data, "next": str(data[-1][cursor_field]) if more and data else None, "has_more": more}
