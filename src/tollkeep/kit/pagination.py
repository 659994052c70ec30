"""Cursor pagination: ``?limit=&after=``; responses carry ``next`` (the cursor) or null.

A page holds at most ``limit`` rows and stops early once its rows pass ``max_bytes`` of JSON
(the row that crosses the budget is still included, so a page is never empty while rows
remain); either way ``next`` says where the following page starts.

Listings ordered by time use :func:`time_cursor`: the cursor is the (time, id) pair of the
page's last row, the very pair the rows are ordered by, so pages never skip or repeat a row
even when many rows share a timestamp.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tollkeep.kit.errors import InvalidInput

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_LIMIT",
    "clamp_limit",
    "page",
    "parse_time_cursor",
    "time_cursor",
]

MAX_LIMIT = 500
DEFAULT_MAX_BYTES = 1_048_576
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)


def clamp_limit(limit: int | None, default: int = 50) -> int:
    if limit is None:
        return default
    return max(1, min(int(limit), MAX_LIMIT))


def time_cursor(when: datetime, row_id: str) -> str:
    """``<microseconds since the epoch>.<id>``: opaque to clients, exact for us."""
    return f"{(when - _EPOCH) // _US}.{row_id}"


def parse_time_cursor(cursor: str) -> tuple[datetime, str]:
    micros, dot, row_id = cursor.partition(".")
    if not dot or not row_id or not micros.isdigit() or len(micros) > 18:
        raise InvalidInput("after: not a cursor this listing returned", code="invalid_cursor")
    return _EPOCH + timedelta(microseconds=int(micros)), row_id


def page(
    items: Sequence[dict[str, Any]],
    limit: int,
    cursor_field: str = "id",
    *,
    max_bytes: int | None = None,
    cursor: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """``items`` was fetched with limit+1 rows; trim (by rows, then by bytes) and say where the
    next page starts."""
    more = len(items) > limit
    data = list(items[:limit])
    if max_bytes is not None and max_bytes > 0:
        size = 0
        for i, item in enumerate(data):
            size += len(json.dumps(item, default=str)) + 1
            if size >= max_bytes and i + 1 < len(data):
                data = data[: i + 1]
                more = True
                break
    nxt = None
    if more and data:
        nxt = cursor(data[-1]) if cursor is not None else str(data[-1][cursor_field])
    return {"data": data, "next": nxt, "has_more": more}
