"""What the sync and async clients share: request bodies, key modes, the retry policy and
the reading of responses. No I/O here: ``_sync`` and ``_async`` send and sleep."""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import quote

import httpx

from tollkeep import __version__
from tollkeep.client.errors import RateLimited, ServerError, TollkeepError, error_for

SERVER_KEY_PREFIX = "tk_sk_"
USER_AGENT = f"tollkeep-python/{__version__}"
# what is retried: no answer (connect errors, timeouts, a dropped connection) and these statuses;
# a POST is safe to send again because every write carries its idempotency key
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)
RETRY_STATUSES = frozenset({502, 503, 504})

Quantity = int | float | str | Decimal


def new_idempotency_key() -> str:
    """A fresh key: ``tkc_`` + the time in ms (hex, so keys sort by creation) + 80 random bits."""
    return f"tkc_{time.time_ns() // 1_000_000:012x}{secrets.token_hex(10)}"


def is_server_key(key: str | None, server_key: bool | None) -> bool:
    """Server-key mode: said explicitly, or a key with the server-key prefix ``tk_sk_``."""
    if server_key is not None:
        return server_key
    return key is not None and key.startswith(SERVER_KEY_PREFIX)


def check_customer(server_mode: bool, customer_id: str | None, call: str) -> None:
    """A server key acts for the customer each call names; a buyer key only for its own."""
    if server_mode and not customer_id:
        raise ValueError(f"{call}: a server key acts for a customer: pass customer_id=")
    if not server_mode and customer_id is not None:
        raise ValueError(
            f"{call}: customer_id is for server keys (tk_sk_…); a buyer key acts as its own customer"
        )


def quantity_json(quantity: Quantity | None) -> Any:
    """Quantities go out exactly: an int as is, a Decimal as its string."""
    if quantity is None or (isinstance(quantity, int | str) and not isinstance(quantity, bool)):
        return quantity
    if isinstance(quantity, Decimal):
        return format(quantity, "f")
    if isinstance(quantity, float):
        return quantity
    raise TypeError(f"quantity must be an int, a Decimal, a float or a string, not {type(quantity).__name__}")


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if v is not None}


def usage_body(
    meter: str,
    quantity: Quantity | None,
    idempotency_key: str,
    properties: Mapping[str, Any] | None,
    customer_id: str | None,
) -> dict[str, Any]:
    return _compact(
        {
            "meter": meter,
            "quantity": quantity_json(quantity),
            "idempotency_key": idempotency_key,
            "properties": None if properties is None else dict(properties),
            "customer_id": customer_id,
        }
    )


def hold_body(
    *,
    amount: int | None,
    meter: str | None,
    quantity: Quantity | None,
    properties: Mapping[str, Any] | None,
    ttl_seconds: int | None,
    idempotency_key: str,
    customer_id: str | None,
) -> dict[str, Any]:
    if amount is None and meter is None:
        raise ValueError("hold: give an amount, or a meter (and an estimated quantity or properties)")
    return _compact(
        {
            "amount": amount,
            "meter": meter,
            "quantity": quantity_json(quantity),
            "properties": None if properties is None else dict(properties),
            "ttl_seconds": ttl_seconds,
            "idempotency_key": idempotency_key,
            "customer_id": customer_id,
        }
    )


def settle_body(
    amount: int | None, quantity: Quantity | None, properties: Mapping[str, Any] | None
) -> dict[str, Any]:
    if amount is None and quantity is None and not properties:
        raise ValueError(
            "settle: give an amount, a quantity, or (tokens meters) the actual token counts in properties"
        )
    return _compact(
        {
            "amount": amount,
            "quantity": quantity_json(quantity),
            "properties": None if properties is None else dict(properties),
        }
    )


def verify_body(buyer_key: str, charge: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"key", "charge"}``; a charge without an idempotency key gets one, so a retried
    verification charges once."""
    if charge is None:
        return {"key": buyer_key, "charge": None}
    body = dict(charge)
    if "meter" not in body:
        raise ValueError("verify_key: a charge needs a meter (it is a POST /v1/usage body)")
    if not body.get("idempotency_key"):
        body["idempotency_key"] = new_idempotency_key()
    if "quantity" in body:
        body["quantity"] = quantity_json(body["quantity"])
    return {"key": buyer_key, "charge": body}


def hold_path(hold_id: str, action: str | None = None) -> str:
    path = f"/v1/holds/{quote(hold_id, safe='')}"
    return f"{path}/{action}" if action else path


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` more attempts after the first, for answers that may go away: no answer at
    all, 502/503/504, and 429 ``rate_limited`` when its ``Retry-After`` is at most
    ``max_retry_after`` seconds. Waits grow ``backoff * 2**n`` up to ``max_backoff``, with
    jitter (half fixed, half random), so clients that failed together do not return together."""

    retries: int = 3
    backoff: float = 0.25
    max_backoff: float = 8.0
    max_retry_after: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0 or self.max_retry_after < 0:
            raise ValueError("retries, backoff, max_backoff and max_retry_after must be >= 0")

    def backoff_delay(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (0 = the first)."""
        cap = min(self.max_backoff, self.backoff * 2 ** min(attempt, 32))
        return cap / 2 + random.uniform(0, cap / 2)

    def after_error(self, attempt: int, error: TollkeepError) -> float | None:
        """How long to wait before sending again after ``error``, or None: don't."""
        if attempt >= self.retries:
            return None
        if isinstance(error, RateLimited):
            wait = error.retry_after
            if wait is None:
                return self.backoff_delay(attempt)
            return wait if wait <= self.max_retry_after else None
        if isinstance(error, ServerError) and error.status in RETRY_STATUSES:
            return self.backoff_delay(attempt)
        return None

    def after_exception(self, attempt: int) -> float | None:
        return None if attempt >= self.retries else self.backoff_delay(attempt)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds: a number, or an HTTP date."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def read_response(response: httpx.Response, idempotency_key: str | None) -> tuple[Any, TollkeepError | None]:
    """(the JSON of a 2xx answer, None) or (None, its typed error)."""
    try:
        data = response.json() if response.content else None
    except ValueError:
        data = None
        if response.is_success:
            return None, ServerError(
                "invalid_response",
                f"the server answered {response.status_code} with a body that is not JSON",
                response.status_code,
                idempotency_key=idempotency_key,
            )
    if response.is_success:
        return data, None
    retry_after = retry_after_seconds(response) if response.status_code == 429 else None
    return None, error_for(
        response.status_code,
        data,
        retry_after=retry_after,
        text=response.text if data is None else "",
        idempotency_key=idempotency_key,
    )


def describe(exc: Exception) -> str:
    """One line for a network failure: what kind, and httpx's message."""
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    detail = str(exc) or type(exc).__name__
    return f"the request {kind} ({type(exc).__name__}: {detail})"


def auth_headers(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True)
class Options:
    """What a client is built with, shared by the sync and async ones."""

    base_url: str
    key: str | None
    server_mode: bool
    timeout: float
    policy: RetryPolicy
    headers: Mapping[str, str]

    def http_kwargs(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url.rstrip("/"),
            "timeout": httpx.Timeout(self.timeout),
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json", **self.headers},
        }

    def with_key(self, key: str | None, server_key: bool | None) -> Options:
        return Options(
            base_url=self.base_url,
            key=key,
            server_mode=is_server_key(key, server_key),
            timeout=self.timeout,
            policy=self.policy,
            headers=self.headers,
        )
