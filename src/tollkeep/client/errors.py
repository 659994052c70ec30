"""Typed errors of the client: one class per family of the server's error codes.

Every failure a client call can raise is a :class:`TollkeepError`: the server's error
envelope ``{"error": {"code", "message", ...}}`` becomes the class of its code (or of its
HTTP status when the code is not one the client knows), a network failure that outlasted
the retries becomes :class:`ConnectionError`. httpx exceptions never leak out of a call.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CODE_CLASSES",
    "STATUS_CLASSES",
    "AuthError",
    "CapExceeded",
    "Conflict",
    "ConnectionError",
    "Forbidden",
    "HoldNotSettled",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidRequest",
    "NotFound",
    "RateLimited",
    "ServerError",
    "TollkeepError",
    "error_for",
]


class TollkeepError(Exception):
    """A call failed. ``code`` is the server's stable error code (``insufficient_credits``,
    ``hold_not_found``, …) or the client's own (``connection_error``, ``hold_not_settled``);
    ``status`` the HTTP status (None when no response came); ``details`` the envelope's other
    fields; ``idempotency_key`` the key the call sent, if it sent one: a later retry with the
    same key is safe (the server answers the first result rather than charging twice)."""

    def __init__(
        self,
        code: str,
        message: str,
        status: int | None = None,
        details: dict[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.details: dict[str, Any] = dict(details or {})
        self.idempotency_key = idempotency_key

    def __str__(self) -> str:
        where = f"{self.status} " if self.status is not None else ""
        return f"{where}{self.code}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"


class InvalidRequest(TollkeepError):
    """400, 413 and 422: the request itself is wrong (``invalid_request`` with ``details``,
    ``unknown_meter``, ``quantity_mismatch``, ``properties_too_large``, ``invalid_json``, …).
    Retrying the same request cannot help."""


class AuthError(TollkeepError):
    """401: no key, an unknown, revoked, suspended or expired key (``invalid_api_key``,
    ``key_revoked``, …)."""


class InsufficientCredits(TollkeepError):
    """402 ``insufficient_credits``: nothing was charged. ``required`` is what the call
    needed, ``available`` what the wallet could draw (see docs/ledger.md). A retry with the
    same idempotency key after a top-up succeeds."""

    @property
    def required(self) -> int | None:
        return _int(self.details.get("required"))

    @property
    def available(self) -> int | None:
        return _int(self.details.get("available"))


class Forbidden(TollkeepError):
    """403: the key lacks a scope, is used from an address it is not allowed from, or its
    customer is inactive (``insufficient_scope``, ``ip_not_allowed``, ``customer_inactive``)."""


class NotFound(TollkeepError):
    """404: ``not_found``, ``customer_not_found``, ``hold_not_found``, ``charge_not_found``, …"""


class Conflict(TollkeepError):
    """409: the request contradicts the state (``hold_resolved``, ``hold_expired``,
    ``key_revoked``, …)."""


class IdempotencyConflict(Conflict):
    """409 ``idempotency_conflict``: this idempotency key was used before with a different
    request. Nothing was charged by this call."""


class CapExceeded(TollkeepError):
    """429 ``cap_exceeded``: a hard cap of the customer's plan refuses the usage until
    ``resets_at``. Not retried: waiting seconds does not help."""

    @property
    def meter(self) -> str | None:
        value = self.details.get("meter")
        return value if isinstance(value, str) else None

    @property
    def limit(self) -> str | None:
        return _str(self.details.get("limit"))

    @property
    def used(self) -> str | None:
        return _str(self.details.get("used"))

    @property
    def resets_at(self) -> str | None:
        return _str(self.details.get("resets_at"))


class RateLimited(TollkeepError):
    """429 ``rate_limited``: too many writes for this customer. The client waits
    ``retry_after`` seconds and retries by itself when that is short (``max_retry_after``);
    this error means it was not, or the retries ran out."""

    @property
    def retry_after(self) -> float | None:
        value = self.details.get("retry_after")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None


class ServerError(TollkeepError):
    """5xx: the server failed (502/503/504 are retried first)."""


class ConnectionError(TollkeepError):
    """No answer from the server after every retry: it could not be reached, or it did not
    answer in time. For a write, the server may or may not have done it: call again with the
    same ``idempotency_key`` (on this error) to find out safely. Not the builtin
    ``ConnectionError``; its ``__cause__`` is the last network exception."""

    def __init__(self, message: str, *, idempotency_key: str | None = None) -> None:
        super().__init__("connection_error", message, None, idempotency_key=idempotency_key)


class HoldNotSettled(TollkeepError):
    """A ``with client.hold(...)`` block ended normally without ``settle()`` or ``release()``.
    The client released the hold (nothing was charged) and raises this so the missing
    settlement cannot go unnoticed."""

    def __init__(self, hold_id: str) -> None:
        super().__init__(
            "hold_not_settled",
            f"the block of hold {hold_id} ended without settle() or release(): the hold was "
            "released and nothing was charged; call h.settle(...) (or h.release()) inside the block",
            None,
            {"hold_id": hold_id},
        )


# the client's class for each error code it knows; other codes fall back on the status
CODE_CLASSES: dict[str, type[TollkeepError]] = {
    "insufficient_credits": InsufficientCredits,
    "cap_exceeded": CapExceeded,
    "rate_limited": RateLimited,
    "idempotency_conflict": IdempotencyConflict,
}
STATUS_CLASSES: dict[int, type[TollkeepError]] = {
    400: InvalidRequest,
    401: AuthError,
    402: InsufficientCredits,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: InvalidRequest,
    422: InvalidRequest,
    429: RateLimited,
}


def error_for(
    status: int,
    body: Any,
    *,
    retry_after: float | None = None,
    text: str = "",
    idempotency_key: str | None = None,
) -> TollkeepError:
    """The typed error of one error response: its envelope's code picks the class, else its
    status does (5xx: :class:`ServerError`, an unknown 4xx: :class:`TollkeepError`). A body
    that is not the envelope (a proxy's HTML page) gets the code ``http_<status>``."""
    envelope = body.get("error") if isinstance(body, dict) else None
    if isinstance(envelope, dict) and isinstance(envelope.get("code"), str):
        code: str = envelope["code"]
        message = str(envelope.get("message") or code)
        details = {k: v for k, v in envelope.items() if k not in ("code", "message")}
    else:
        code = f"http_{status}"
        message = (text.strip()[:200] or f"HTTP {status}").replace("\n", " ")
        details = {}
    if retry_after is not None and "retry_after" not in details:
        details["retry_after"] = retry_after
    cls = CODE_CLASSES.get(code) or STATUS_CLASSES.get(status)
    if cls is None:
        cls = ServerError if status >= 500 else TollkeepError
    return cls(code, message, status, details, idempotency_key=idempotency_key)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)
