"""The Python client of a tollkeep server (sync and async, on httpx).

    from tollkeep.client import Client, InsufficientCredits

    with Client("http://127.0.0.1:8080", "tk_live_…") as tk:
        tk.charge("api_call")                       # idempotency key generated, retries safe
        with tk.hold(meter="llm_tokens", properties=estimate) as h:
            h.settle(properties=actual)             # an exception in the block releases it

Importing it loads httpx and nothing of the server. See docs/client.md.
"""

from tollkeep.client._async import AsyncClient, AsyncHold
from tollkeep.client._core import new_idempotency_key
from tollkeep.client._sync import Client, Hold
from tollkeep.client.errors import (
    AuthError,
    CapExceeded,
    Conflict,
    ConnectionError,
    Forbidden,
    HoldNotSettled,
    IdempotencyConflict,
    InsufficientCredits,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    TollkeepError,
)
from tollkeep.client.models import (
    Balance,
    Charge,
    Grant,
    HoldState,
    KeyVerification,
    Pricing,
    Settlement,
    UsageEvent,
    UsagePage,
)

__all__ = [
    "AsyncClient",
    "AsyncHold",
    "AuthError",
    "Balance",
    "CapExceeded",
    "Charge",
    "Client",
    "Conflict",
    "ConnectionError",
    "Forbidden",
    "Grant",
    "Hold",
    "HoldNotSettled",
    "HoldState",
    "IdempotencyConflict",
    "InsufficientCredits",
    "InvalidRequest",
    "KeyVerification",
    "NotFound",
    "Pricing",
    "RateLimited",
    "ServerError",
    "Settlement",
    "TollkeepError",
    "UsageEvent",
    "UsagePage",
    "new_idempotency_key",
]
