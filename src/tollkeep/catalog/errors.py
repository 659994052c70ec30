"""Errors raised by the catalog loader and by rating.

All of them are :class:`~tollkeep.kit.errors.TollkeepError` subclasses, so they
reach HTTP clients as ``{"error": {"code": ..., "message": ..., **details}}``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from tollkeep.kit.errors import InvalidInput, TollkeepError

__all__ = [
    "CatalogError",
    "InvalidQuantity",
    "UnknownMeter",
    "UnknownModel",
]


class CatalogError(TollkeepError):
    """A catalog file is invalid. ``details["issues"]`` lists every problem found.

    Each issue is ``{"file": ..., "key": "meters.api_call.price.amount", "reason": ...}``
    (TOML syntax errors also carry ``line`` and ``column``).
    """

    code = "invalid_catalog"
    status = 422

    def __init__(self, issues: Iterable[Mapping[str, Any]], *, message: str | None = None) -> None:
        self.issues: list[dict[str, Any]] = [dict(issue) for issue in issues]
        super().__init__(message or _describe(self.issues), details={"issues": self.issues})


def _describe(issues: list[dict[str, Any]]) -> str:
    count = len(issues)
    head = f"invalid catalog ({count} issue{'s' if count != 1 else ''}):"
    lines = [head]
    for issue in issues:
        where = str(issue.get("file") or "<catalog>")
        if issue.get("line") is not None:
            where += f":{issue['line']}"
            if issue.get("column") is not None:
                where += f":{issue['column']}"
        key = issue.get("key")
        lines.append(
            f"  {where}: {key}: {issue.get('reason')}" if key else f"  {where}: {issue.get('reason')}"
        )
    return "\n".join(lines)


class UnknownMeter(InvalidInput):
    code = "unknown_meter"
    status = 422


class UnknownModel(InvalidInput):
    code = "unknown_model"
    status = 422


class InvalidQuantity(InvalidInput):
    code = "invalid_quantity"
    status = 422
