"""Request and response bodies of the ledger routes. Money is StrictInt, never float."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictInt, create_model

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


# ---- responses: each describes exactly the JSON a route answers (tests validate real answers
# against them with extra fields forbidden); the routes return that JSON as is
class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


Money = dict[str, dict[str, str | None]]
_MONEY_DOC = "by currency, when the catalog states a credit's value: each amount in money (exact)"


def _display(name: str, *fields: str, optional: tuple[str, ...] = ()) -> type[Out]:
    """The ``display`` object of an answer with these integer amounts: each in credits as an
    exact decimal string (None stays None; ``optional``: absent when the answer has no such
    amount), ``unit`` the credit's name, ``money`` optional."""
    spec: dict[str, Any] = {
        f: (str | None, Field(None, description=f"{f} in credits (absent: no such amount here)"))
        if f in optional
        else (str | None, Field(description=f"{f} in credits"))
        for f in fields
    }
    model: type[Out] = create_model(
        name,
        __base__=Out,
        unit=(str, Field(description="what one credit is called")),
        money=(Money | None, Field(None, description=_MONEY_DOC)),
        **spec,
    )
    return model


UsageDisplay = _display("UsageDisplay", "charged", "balance")
BalanceDisplay = _display(
    "BalanceDisplay", "balance", "available", "held", "overdraft_limit", "overdraft_used"
)
HoldDisplay = _display("HoldDisplay", "amount", "settled_amount", "balance", optional=("balance",))
ResolutionDisplay = _display("ResolutionDisplay", "amount", "settled_amount", "charged", "balance")
GrantDisplay = _display("GrantDisplay", "amount", "balance")
RefundDisplay = _display("RefundDisplay", "amount", "to_original_grants", "balance")

UNIT_DOC = "the ledger's integer unit every amount here is in (`credit`, or e.g. `millicredit`)"


class UsageOut(Out):
    event_id: str
    charged: int
    unit: str = Field(description=UNIT_DOC)
    meter: str
    quantity: str
    catalog_version: str
    created_at: datetime
    balance: int
    duplicate: bool
    display: UsageDisplay  # type: ignore[valid-type]


class BalanceGrantOut(Out):
    id: str
    source: str
    amount: int
    remaining: int
    priority: int
    meter: str | None
    effective_at: datetime | None
    expires_at: datetime | None
    live: bool


class UsagePeriodOut(Out):
    """The month tiered prices and monthly caps count now: the subscription's own (it renews
    on the subscription's day, month ends clamped) or the calendar month (UTC)."""

    start: datetime
    end: datetime
    source: Literal["subscription", "calendar"]


class BalanceOut(Out):
    customer_id: str
    balance: int
    available: int = Field(description="what a charge (no meter, no cap) could draw now")
    available_by_meter: dict[str, int]
    held: int
    overdraft_limit: int
    overdraft_used: int
    unit: str = Field(description=UNIT_DOC)
    grants: list[BalanceGrantOut]
    usage_period: UsagePeriodOut
    display: BalanceDisplay  # type: ignore[valid-type]


class HoldOut(Out):
    """A hold (``GET``: without ``balance`` and ``duplicate``; ``extend``: without ``duplicate``)."""

    id: str
    customer_id: str
    amount: int
    status: Literal["open", "settled", "released", "expired"]
    meter: str | None
    quantity: str | None
    expires_at: datetime
    settled_amount: int | None
    unit: str = Field(description=UNIT_DOC)
    balance: int | None = None
    duplicate: bool | None = None
    display: HoldDisplay  # type: ignore[valid-type]


class HoldResolutionOut(Out):
    id: str
    status: Literal["settled", "released", "expired"]
    amount: int
    settled_amount: int | None
    charged: int
    operation_id: str
    unit: str = Field(description=UNIT_DOC)
    balance: int
    duplicate: bool
    display: ResolutionDisplay  # type: ignore[valid-type]


class UsageEventOut(Out):
    event_id: str
    meter: str | None
    quantity: str | None
    charged: int
    refunded: int
    idempotency_key: str
    properties: dict[str, Any]
    catalog_version: str | None
    hold_id: str | None
    created_at: datetime


class UsagePageOut(Out):
    data: list[UsageEventOut]
    next: str | None
    has_more: bool


class JournalEntryOut(Out):
    id: int
    kind: str
    delta: int
    grant_id: str | None
    operation_id: str | None
    hold_id: str | None
    created_at: datetime


class JournalPageOut(Out):
    data: list[JournalEntryOut]
    next: int | str | None
    has_more: bool


class GrantOut(Out):
    id: str
    operation_id: str
    customer_id: str
    amount: int
    source: str
    priority: int
    meter: str | None
    effective_at: datetime
    expires_at: datetime | None
    unit: str = Field(description=UNIT_DOC)
    balance: int
    duplicate: bool
    display: GrantDisplay  # type: ignore[valid-type]


class RefundOut(Out):
    id: str
    charge_id: str
    amount: int
    to_original_grants: int
    new_grant_id: str | None
    reason: str | None
    unit: str = Field(description=UNIT_DOC)
    balance: int
    duplicate: bool
    display: RefundDisplay  # type: ignore[valid-type]


class OverdraftOut(Out):
    customer_id: str
    overdraft_limit: int
    overdraft_used: int


class SweepOut(Out):
    holds_released: int
    grants_expired: int


class KeyVerifyOut(Out):
    valid: bool
    code: str | None = Field(description="why the key is not valid, or why the charge was refused")
    customer_id: str | None
    balance: int | None
    charged: int | None = Field(description="null: no charge asked; 0: refused")
    details: dict[str, Any] | None = Field(None, description="a refused charge's error details")
    charge: UsageOut | None = Field(None, description="the charge's answer, as POST /v1/usage")


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
