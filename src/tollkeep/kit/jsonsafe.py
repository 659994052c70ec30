"""Values that every database we support can store: JSON with finite numbers, text without NUL.

PostgreSQL's JSON refuses NaN and Infinity and its text refuses the NUL character; SQLite
would store NaN as null. Both are caller errors, caught here as a 422 before any write.
"""

from __future__ import annotations

import math
from typing import Any

from tollkeep.kit.errors import InvalidInput

__all__ = ["MAX_DEPTH", "check_json", "check_text"]

MAX_DEPTH = 16


def check_text(value: str, where: str) -> str:
    if "\x00" in value:
        raise InvalidInput(f"{where} contains a NUL character", code="invalid_text")
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
