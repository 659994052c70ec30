"""One error hierarchy. Every error a client can see is a TollkeepError.

They reach HTTP clients as ``{"error": {"code": ..., "message": ..., **details}}``
with the error's status; anything else is a bug and becomes a bare 500.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "CapExceeded",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidInput",
    "NotFound",
    "TollkeepError",
]


class TollkeepError(Exception):
    code: str = "error"
    status: int = 400

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details: dict[str, Any] = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        body.update(self.details)
        return {"error": body}


class InvalidInput(TollkeepError):
    code = "invalid_request"
    status = 422


class NotFound(TollkeepError):
    code = "not_found"
    status = 404


class Conflict(TollkeepError):
    code = "conflict"
    status = 409


class IdempotencyConflict(Conflict):
    code = "idempotency_conflict"


class AuthError(TollkeepError):
    code = "unauthorized"
    status = 401


class Forbidden(TollkeepError):
    code = "forbidden"
    status = 403


class InsufficientCredits(TollkeepError):
    code = "insufficient_credits"
    status = 402


class CapExceeded(TollkeepError):
    code = "cap_exceeded"
    status = 429


class DatabaseUnavailable(TollkeepError):
    """The configured database cannot be used: a URL mistake, a server that does not answer,
    a missing database or role, or a database without the tollkeep schema. The message says in
    one line what is wrong and what to do."""

    code = "database_unavailable"
    status = 503
