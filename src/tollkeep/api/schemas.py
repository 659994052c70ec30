"""Request and response bodies of the HTTP API (pydantic). Money is StrictInt, never float."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

from tollkeep.kit.errors import TollkeepError
from tollkeep.kit.jsonsafe import check_json

Key = Field(min_length=1, max_length=255, description="Idempotency key: same key + same body = same result")
Quantity = Field(None, ge=0, allow_inf_nan=False, max_digits=30, description="Defaults to 1")


class Strict(BaseModel):
    """Request bodies: unknown fields are errors; every value must be storable (no NUL in
    text, no NaN or Infinity in JSON), so bad input is a 422, never a database error."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> Strict:
        try:
            for name in type(self).model_fields:
                value = getattr(self, name)
                if isinstance(value, str | dict | list):
                    check_json(value, name)
        except TollkeepError as exc:
            raise ValueError(exc.message) from None
        return self


class CustomerIn(Strict):
    external_id: str = Field(min_length=1, max_length=255)
    email: str | None = Field(None, max_length=320)
    name: str | None = Field(None, max_length=255)
    metadata: dict[str, Any] | None = None
    plan: str | None = Field(None, max_length=64)


class CustomerPatch(Strict):
    email: str | None = Field(None, max_length=320)
    name: str | None = Field(None, max_length=255)
    metadata: dict[str, Any] | None = None
    status: Literal["active", "suspended", "closed"] | None = None


class PlanIn(Strict):
    plan: str | None = Field(min_length=1, max_length=64, description="a plan key, or null for none")


class OverdraftIn(Strict):
    limit: StrictInt = Field(ge=0, le=10**15)


class KeyIn(Strict):
    name: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=2000)
    scopes: list[str] | None = Field(None, max_length=20)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    expires_at: AwareDatetime | None = None
    force_new: StrictBool = Field(False, description="Make a new key even if the customer has an active one")


class KeyPatch(Strict):
    name: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=2000)
    scopes: list[str] | None = Field(None, max_length=20)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    expires_at: AwareDatetime | None = None


class RotateIn(Strict):
    grace_seconds: StrictInt = Field(0, ge=0, le=30 * 86400)
    expires_at: AwareDatetime | None = Field(
        None, description="expiry of the new key (none by default: it never inherits the old key's)"
    )


def _idempotency_key_required(schema: dict[str, Any]) -> None:
    schema.setdefault("required", [])
    if "idempotency_key" not in schema["required"]:
        schema["required"].append("idempotency_key")


class GrantIn(Strict):
    # the key is required (a retried grant must not credit twice); it is checked by the route so
    # that a missing key gets the stable code `invalid_idempotency_key`
    model_config = ConfigDict(extra="forbid", json_schema_extra=_idempotency_key_required)

    amount: StrictInt = Field(gt=0, le=10**15)
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


class UsageIn(Strict):
    meter: str = Field(min_length=1, max_length=64)
    quantity: Decimal | None = Quantity
    idempotency_key: str = Key
    properties: dict[str, Any] | None = None


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
    amount: StrictInt | None = Field(None, ge=0, le=10**15)
    meter: str | None = Field(None, min_length=1, max_length=64)
    quantity: Decimal | None = Quantity
    properties: dict[str, Any] | None = None
    ttl_seconds: StrictInt | None = Field(None, ge=1)
    idempotency_key: str = Key


class SettleIn(Strict):
    amount: StrictInt | None = Field(None, ge=0, le=10**15)
    quantity: Decimal | None = Quantity
    properties: dict[str, Any] | None = Field(
        None, description="actual event properties (e.g. token counts), merged over the hold's"
    )


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorBody
