"""What the client's calls return: frozen dataclasses mirroring the server's JSON.

Amounts are ``int`` (ledger units, named by ``unit``), quantities ``Decimal``, times aware
``datetime``. Each keeps the JSON it was read from in ``raw`` (fields a newer server adds are
there before the client knows them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

__all__ = [
    "Balance",
    "Charge",
    "Grant",
    "HoldState",
    "KeyVerification",
    "Pricing",
    "Settlement",
    "UsageEvent",
    "UsagePage",
]


def _dt(value: Any) -> datetime | None:
    return None if value is None else datetime.fromisoformat(str(value))


def _dec(value: Any) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Charge:
    """The result of ``POST /v1/usage``. ``duplicate`` is True when the server answered an
    earlier request with the same idempotency key (nothing was charged again);
    ``idempotency_key`` is the key the client sent (given or generated)."""

    event_id: str
    charged: int
    balance: int
    duplicate: bool
    unit: str
    meter: str
    quantity: Decimal
    catalog_version: str
    created_at: datetime
    idempotency_key: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any], idempotency_key: str | None = None) -> Charge:
        created = _dt(data["created_at"])
        assert created is not None
        return cls(
            event_id=data["event_id"],
            charged=int(data["charged"]),
            balance=int(data["balance"]),
            duplicate=bool(data["duplicate"]),
            unit=data["unit"],
            meter=data["meter"],
            quantity=Decimal(str(data["quantity"])),
            catalog_version=data["catalog_version"],
            created_at=created,
            idempotency_key=idempotency_key,
            raw=data,
        )


@dataclass(frozen=True)
class Grant:
    """A credit lot of the wallet (see docs/ledger.md)."""

    id: str
    source: str
    amount: int
    remaining: int
    priority: int
    meter: str | None
    effective_at: datetime | None
    expires_at: datetime | None
    live: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Grant:
        return cls(
            id=data["id"],
            source=data["source"],
            amount=int(data["amount"]),
            remaining=int(data["remaining"]),
            priority=int(data["priority"]),
            meter=data.get("meter"),
            effective_at=_dt(data.get("effective_at")),
            expires_at=_dt(data.get("expires_at")),
            live=bool(data.get("live", True)),
            raw=data,
        )


@dataclass(frozen=True)
class Balance:
    """``GET /v1/balance``: ``available`` is what a charge could draw now (live credits and
    unused overdraft), the number a 402 reports."""

    customer_id: str | None
    balance: int
    available: int
    held: int
    overdraft_limit: int
    overdraft_used: int
    unit: str
    available_by_meter: dict[str, int] = field(default_factory=dict)
    grants: tuple[Grant, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Balance:
        return cls(
            customer_id=data.get("customer_id"),
            balance=int(data["balance"]),
            available=int(data["available"]),
            held=int(data.get("held", 0)),
            overdraft_limit=int(data.get("overdraft_limit", 0)),
            overdraft_used=int(data.get("overdraft_used", 0)),
            unit=data["unit"],
            available_by_meter={k: int(v) for k, v in (data.get("available_by_meter") or {}).items()},
            grants=tuple(Grant.from_json(g) for g in data.get("grants") or ()),
            raw=data,
        )


@dataclass(frozen=True)
class UsageEvent:
    """One charge in ``GET /v1/usage``: a usage event, or a settled hold (``hold_id`` set)."""

    event_id: str
    meter: str | None
    quantity: Decimal | None
    charged: int
    refunded: int
    idempotency_key: str | None
    properties: dict[str, Any]
    catalog_version: str | None
    hold_id: str | None
    created_at: datetime | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsageEvent:
        return cls(
            event_id=data["event_id"],
            meter=data.get("meter"),
            quantity=_dec(data.get("quantity")),
            charged=int(data["charged"]),
            refunded=int(data.get("refunded", 0)),
            idempotency_key=data.get("idempotency_key"),
            properties=dict(data.get("properties") or {}),
            catalog_version=data.get("catalog_version"),
            hold_id=data.get("hold_id"),
            created_at=_dt(data.get("created_at")),
            raw=data,
        )


@dataclass(frozen=True)
class UsagePage:
    """A page of ``GET /v1/usage``, newest first; pass ``next`` as ``after`` for the next one
    (None: this was the last)."""

    data: tuple[UsageEvent, ...]
    next: str | None
    has_more: bool
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> UsagePage:
        return cls(
            data=tuple(UsageEvent.from_json(e) for e in data.get("data") or ()),
            next=data.get("next"),
            has_more=bool(data.get("has_more", False)),
            raw=data,
        )


@dataclass(frozen=True)
class HoldState:
    """A hold as the server shows it (``POST /v1/holds``, ``GET /v1/holds/{id}``).
    ``balance`` is present right after it was made; ``duplicate`` when a retried request
    found the hold its idempotency key had made."""

    id: str
    customer_id: str | None
    amount: int
    status: str
    meter: str | None
    quantity: Decimal | None
    expires_at: datetime | None
    settled_amount: int | None
    unit: str
    balance: int | None = None
    duplicate: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HoldState:
        return cls(
            id=data["id"],
            customer_id=data.get("customer_id"),
            amount=int(data["amount"]),
            status=data["status"],
            meter=data.get("meter"),
            quantity=_dec(data.get("quantity")),
            expires_at=_dt(data.get("expires_at")),
            settled_amount=_opt_int(data.get("settled_amount")),
            unit=data["unit"],
            balance=_opt_int(data.get("balance")),
            duplicate=bool(data.get("duplicate", False)),
            raw=data,
        )


@dataclass(frozen=True)
class Settlement:
    """The result of settling or releasing a hold. ``charged`` is what the hold cost (0 for
    a release); ``balance`` is the wallet's balance now, also on a replay (``duplicate``)."""

    id: str
    status: str
    amount: int
    settled_amount: int | None
    charged: int
    operation_id: str | None
    unit: str
    balance: int | None = None
    duplicate: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Settlement:
        return cls(
            id=data["id"],
            status=data["status"],
            amount=int(data["amount"]),
            settled_amount=_opt_int(data.get("settled_amount")),
            charged=int(data.get("charged", 0)),
            operation_id=data.get("operation_id"),
            unit=data["unit"],
            balance=_opt_int(data.get("balance")),
            duplicate=bool(data.get("duplicate", False)),
            raw=data,
        )


@dataclass(frozen=True)
class Pricing:
    """``GET /v1/pricing``: the active catalog's unit, meters and plans, keyed by their key
    (each as the server's JSON)."""

    version: str
    label: str | None
    unit: str
    per_credit: int
    rounding: str
    meters: dict[str, dict[str, Any]]
    plans: dict[str, dict[str, Any]]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Pricing:
        credits = data.get("credits") or {}
        return cls(
            version=data["version"],
            label=data.get("label"),
            unit=credits.get("unit", "credit"),
            per_credit=int(credits.get("per_credit", 1)),
            rounding=credits.get("rounding", "up"),
            meters={m["key"]: m for m in data.get("meters") or ()},
            plans={p["key"]: p for p in data.get("plans") or ()},
            raw=data,
        )


@dataclass(frozen=True)
class KeyVerification:
    """``POST /v1/keys/verify`` (server keys): whether a buyer's key is valid (``code`` says
    why not), whose it is, and — when a charge was asked for — what it charged."""

    valid: bool
    code: str | None
    customer_id: str | None
    balance: int | None
    charged: int | None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> KeyVerification:
        return cls(
            valid=bool(data["valid"]),
            code=data.get("code"),
            customer_id=data.get("customer_id"),
            balance=_opt_int(data.get("balance")),
            charged=_opt_int(data.get("charged")),
            raw=data,
        )
