"""One HTTP call to a provider's API, its failures said as tollkeep errors.

Every call has a timeout (``provider_timeout_seconds``). A timeout, a refused connection, a 5xx
or a 429 is :class:`ProviderUnavailable` (the inbox retries later, a checkout answers 502); a
401/403 too, with a message that names the setting to check (never the key). Other statuses are
returned for the adapter to read (404: no such invoice/order).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from tollkeep.payments.providers.base import ProviderUnavailable

__all__ = ["call", "error_text"]


def error_text(response: httpx.Response) -> str:
    """A short reason from a provider's error body (its ``message``/``error``), else the status."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        for key in ("message", "error", "detail", "code"):
            value = body.get(key)
            if isinstance(value, str) and value:
                return value[:300]
    return f"HTTP {response.status_code}"


def call(
    provider: str,
    method: str,
    url: str,
    *,
    headers: Mapping[str, str],
    timeout: float,
    key_setting: str,
    json: Any = None,
    params: Mapping[str, Any] | None = None,
) -> httpx.Response:
    try:
        with httpx.Client(timeout=timeout, follow_redirects=False) as client:
            response = client.request(method, url, headers=dict(headers), json=json, params=params)
    except httpx.TimeoutException:
        raise ProviderUnavailable(
            f"{provider} did not answer within {timeout:g}s ({method} {_path(url)})",
            details={"provider": provider},
        ) from None
    except httpx.HTTPError as exc:
        raise ProviderUnavailable(
            f"{provider} could not be reached ({type(exc).__name__}: {method} {_path(url)})",
            details={"provider": provider},
        ) from None
    status = response.status_code
    if status in (401, 403):
        raise ProviderUnavailable(
            f"{provider} refused our API key ({status} on {method} {_path(url)}): check {key_setting} "
            "and its permissions",
            details={"provider": provider, "provider_status": status},
        )
    if status >= 500 or status == 429:
        raise ProviderUnavailable(
            f"{provider} failed ({status} on {method} {_path(url)}: {error_text(response)})",
            details={"provider": provider, "provider_status": status},
        )
    return response


def _path(url: str) -> str:
    return httpx.URL(url).path
