"""Request and response bodies of the ledger routes. Money is StrictInt, never float."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt

from tollkeep.api.schemas import Key, Quantity, Strict

__all__ = [
    "MAX_AMOUNT",
    "ExtendIn",
    "GrantIn",
    "HoldIn",
    "KeyVerifyIn",
    "OverdraftIn",
    "RefundIn",
    "SettleIn",
    "UsageIn",
    "UsageOut",
]

# the largest amount a request may carry (credits in the ledger unit); the CLI uses it too
MAX_AMOUNT = 10**15


def _idempotency_key_required(schema: dict[str, Any]) -> None:
    schema.setdefault("required", [])
    if "idempotency_key" not in schema["required"]:
        schema["required"].append("idempotency_key")


class OverdraftIn(Strict):
    limit: StrictInt = Field(ge=0, le=MAX_AMOUNT)


class GrantIn(Strict):
    # the key is required (a retried grant must not credit twice); it is checked by the route so
    # that a missing key gets the stable code `invalid_idempotency_key`
    model_config = ConfigDict(extra="forbid", json_schema_extra=_idempotency_key_required)

    amount: StrictInt = Field(gt=0, le=MAX_AMOUNT)
    source: Literal["plan_allowance", "purchase", "promo", "refund", "adjustment"] = "purchase"
    expires_at: AwareDatetime | None = None
    effective_at: AwareDatetime | None = None
    priority: StrictInt | None = Field(None, ge=0, le=1000)
    meter: str | None = Field(None, max_length=64)
    note: str | None = Field(None, max_length=2000)
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=255, description="required: a retry with the same key credits once"
    )


class RefundIn(Strict):
    amount: StrictInt | None = Field(None, gt=0)
    reason: str | None = Field(None, max_length=2000)
    idempotency_key: str = Key


CustomerId = Field(
    None,
    min_length=1,
    max_length=40,
    description="with a server key: the customer to charge (required); with an API key: its own, or omitted",
)


class UsageIn(Strict):
    meter: str = Field(min_length=1, max_length=64)
    quantity: Decimal | None = Quantity
    idempotency_key: str = Key
    properties: dict[str, Any] | None = None
    customer_id: str | None = CustomerId


class UsageOut(BaseModel):
    event_id: str
    charged: int
    balance: int
    duplicate: bool
    unit: str
    meter: str
    quantity: str
    catalog_version: str
    created_at: datetime


class HoldIn(Strict):
    amount: StrictInt | None = Field(None, ge=0, le=MAX_AMOUNT)
    meter: str | None = Field(None, min_length=1, max_length=64)
    quantity: Decimal | None = Quantity
    properties: dict[str, Any] | None = None
    ttl_seconds: StrictInt | None = Field(None, ge=1)
    idempotency_key: str = Key
    customer_id: str | None = CustomerId


class SettleIn(Strict):
    amount: StrictInt | None = Field(None, ge=0, le=MAX_AMOUNT)
    quantity: Decimal | None = Quantity
    properties: dict[str, Any] | None = Field(
        None, description="actual event properties (e.g. token counts), merged over the hold's"
    )


class ExtendIn(Strict):
    ttl_seconds: StrictInt = Field(
        ge=1, description="the hold now expires this many seconds from now (never earlier than it did)"
    )


class KeyVerifyIn(Strict):
    key: str = Field(min_length=1, max_length=256, description="the buyer's API key (tk_live_…)")
    charge: UsageIn | None = Field(None, description="a /v1/usage body: charged when the key is valid")
    ip: str | None = Field(
        None, max_length=64, description="the buyer's address, for keys with an IP allowlist"
    )
