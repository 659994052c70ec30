"""Values that every database we support can store: JSON with finite numbers, text without NUL
or lone surrogates.

PostgreSQL's JSON refuses NaN and Infinity and its text refuses the NUL character; SQLite
would store NaN as null. A lone UTF-16 surrogate (JSON ``"\\ud800"``, which Python's json
module accepts) is stored, then breaks every response that contains it. All are caller errors,
caught here as a 422 before any write: this is the one check every stored JSON value and text
goes through (request models in ``api/schemas.py``, and the services).
"""

from __future__ import annotations

import json
import math
from typing import Any

from tollkeep.kit.errors import InvalidInput

__all__ = ["MAX_DEPTH", "check_json", "check_properties", "check_text", "json_size"]

MAX_DEPTH = 16


def check_text(value: str, where: str) -> str:
    if "\x00" in value:
        raise InvalidInput(f"{where} contains a NUL character", code="invalid_text")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInput(
                f"{where} contains a lone surrogate (not valid Unicode text)", code="invalid_text"
            ) from None
    return value


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (as stored)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _count_keys(value: Any) -> int:
    if isinstance(value, dict):
        return len(value) + sum(_count_keys(v) for v in value.values())
    if isinstance(value, list | tuple):
        return sum(_count_keys(v) for v in value)
    return 0


def check_properties(value: Any, where: str, *, max_bytes: int, max_keys: int) -> Any:
    """``check_json`` plus a size bound: at most ``max_bytes`` of JSON and ``max_keys`` keys
    (counted at every level). Beyond: 422 ``properties_too_large``."""
    if value is None:
        return value
    check_json(value, where)
    if max_keys > 0 and _count_keys(value) > max_keys:
        raise InvalidInput(
            f"{where} has more than {max_keys} keys",
            code="properties_too_large",
            details={"max_keys": max_keys},
        )
    if max_bytes > 0 and json_size(value) > max_bytes:
        raise InvalidInput(
            f"{where} is larger than {max_bytes} bytes as JSON",
            code="properties_too_large",
            details={"max_bytes": max_bytes},
        )
    return value


def check_json(value: Any, where: str, _depth: int = 0) -> Any:
    """Return ``value`` unchanged if it is storable JSON, else raise InvalidInput."""
    if _depth > MAX_DEPTH:
        raise InvalidInput(f"{where} is nested more than {MAX_DEPTH} levels deep", code="invalid_json_value")
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidInput(f"{where} holds a non-finite number", code="invalid_json_value")
        return value
    if isinstance(value, str):
        return check_text(value, where)
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise InvalidInput(f"{where} has a key that is not a string", code="invalid_json_value")
            check_text(k, f"{where} key")
            check_json(v, f"{where}.{k}", _depth + 1)
        return value
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            check_json(v, f"{where}[{i}]", _depth + 1)
        return value
    raise InvalidInput(f"{where} holds a {type(value).__name__}, not a JSON value", code="invalid_json_value")
