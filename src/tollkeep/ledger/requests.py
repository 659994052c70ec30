"""What the ledger's use cases accept: one frozen request type each, checked by its own
``validate()`` (no database, no catalog), built on one amount check, one idempotency-key check
and one quantity check, so every entry point (HTTP, CLI, Python) refuses the same input with
the same code.

``validate()`` returns the request normalized (a quantity as a ``Decimal``, properties as a
checked dict, a hold's TTL filled in), the very same object when nothing needs to change, and
``fingerprint()`` is the request hash that tells a replay from a key reused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from tollkeep.kit.errors import InvalidInput
from tollkeep.kit.jsonsafe import check_json
from tollkeep.ledger.domain import request_hash
from tollkeep.ledger.kinds import GrantSource, OpKind

__all__ = [
    "ExtendRequest",
    "GrantRequest",
    "HoldRequest",
    "RefundRequest",
    "ReleaseRequest",
    "SettleRequest",
    "UsageRequest",
    "check_amount",
    "check_idempotency_key",
    "check_quantity",
]

MAX_KEY = 255  # operations.idempotency_key is a VARCHAR(255)


def check_amount(value: Any, *, minimum: int = 1, what: str = "amount") -> int:
    """An amount of credits: an ``int`` (never a bool, a float or a string) of at least
    ``minimum`` (1: a positive integer; 0: an integer >= 0). 422 ``invalid_amount``."""
    if type(value) is int and value >= minimum:
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        rule = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise InvalidInput(f"{what} must be {rule}", code="invalid_amount")
    return int(value)


def check_idempotency_key(key: Any) -> str:
    """1-255 characters. 422 ``invalid_idempotency_key``."""
    if not key or not isinstance(key, str) or len(key) > MAX_KEY:
        raise InvalidInput(
            f"idempotency_key is required (1-{MAX_KEY} characters)", code="invalid_idempotency_key"
        )
    return key


def check_quantity(value: Any, what: str = "quantity") -> Decimal:
    """A finite number >= 0, as a Decimal. 422 ``invalid_quantity``."""
    try:
        d = value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise InvalidInput(f"{what} must be a number", code="invalid_quantity") from exc
    if not d.is_finite() or d < 0:
        raise InvalidInput(f"{what} must be a finite number >= 0", code="invalid_quantity")
    return d


def _properties(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy (the caller may reuse its dict while the command waits), checked; None stays None."""
    if value is None:
        return None
    return check_json(dict(value), "properties")


_SOURCES = frozenset(GrantSource)


# ------------------------------------------------------------------------------------- usage
@dataclass(frozen=True, slots=True)
class UsageRequest:
    """A metered event to charge. ``quantity`` None counts 1 (a tokens meter: the token counts
    in ``properties``)."""

    customer_id: str
    meter: str
    quantity: Decimal | None
    idempotency_key: str
    properties: Mapping[str, Any] | None = None
    api_key_id: str | None = None

    def validate(self) -> UsageRequest:
        check_idempotency_key(self.idempotency_key)
        q = None if self.quantity is None else check_quantity(self.quantity)
        props = _properties(self.properties)
        if q is self.quantity and props is None:
            return self
        return UsageRequest(self.customer_id, self.meter, q, self.idempotency_key, props, self.api_key_id)

    @property
    def counted(self) -> Decimal:
        """The quantity to rate (1 when none was given)."""
        return Decimal(1) if self.quantity is None else self.quantity

    def fingerprint(self) -> str:
        return request_hash(
            {"meter": self.meter, "quantity": self.counted, "properties": self.properties or {}}
        )


# ------------------------------------------------------------------------------------- grants
@dataclass(frozen=True, slots=True)
class GrantRequest:
    """Credits to grant. Without an idempotency key, one is made (the grant is not retryable)."""

    customer_id: str
    amount: int
    source: str = GrantSource.PURCHASE
    idempotency_key: str | None = None
    expires_at: datetime | None = None
    effective_at: datetime | None = None
    priority: int | None = None
    meter: str | None = None
    note: str | None = None

    def validate(self) -> GrantRequest:
        check_amount(self.amount)
        if self.source not in _SOURCES:
            raise InvalidInput(f"source must be one of {', '.join(GrantSource)}", code="invalid_source")
        if self.idempotency_key:  # none (or empty): the use case makes one
            check_idempotency_key(self.idempotency_key)
        for label, ts in (("expires_at", self.expires_at), ("effective_at", self.effective_at)):
            if ts is not None and ts.tzinfo is None:
                raise InvalidInput(f"{label} needs a timezone", code="invalid_timestamp")
        return self

    def check_window(self, now: datetime) -> None:
        """The grant must end after it starts, in the future (checked at ``now``, in the unit of work)."""
        if self.expires_at is not None and self.expires_at <= max(self.effective_at or now, now):
            raise InvalidInput(
                "expires_at must be in the future and after the grant takes effect",
                code="invalid_timestamp",
            )

    def fingerprint(self) -> str:
        return request_hash(
            {
                "amount": self.amount,
                "source": self.source,
                "expires_at": self.expires_at,
                "effective_at": self.effective_at,
                "priority": self.priority,
                "meter": self.meter,
            }
        )


# ------------------------------------------------------------------------------------- holds
@dataclass(frozen=True, slots=True)
class HoldRequest:
    """Credits to reserve: an ``amount``, or a ``meter`` and an estimated ``quantity`` (rated
    now; 1 when none is given), or both (the amount is held, the quantity reserved against caps)."""

    customer_id: str
    idempotency_key: str
    amount: int | None = None
    meter: str | None = None
    quantity: Any = None
    properties: Mapping[str, Any] | None = None
    ttl_seconds: int | None = None
    api_key_id: str | None = None
    # "server:<id>" when the seller's server key opens it: then only a server key (or the
    # admin) may settle or release it, never the buyer's own key
    opened_by: str | None = None

    def validate(self, *, default_ttl: int, max_ttl: int) -> HoldRequest:
        """Checked, with the TTL filled in (``default_ttl`` when none is given)."""
        check_idempotency_key(self.idempotency_key)
        if self.amount is None and self.meter is None:
            raise InvalidInput("give an amount, or a meter and an estimated quantity", code="invalid_hold")
        if self.amount is not None:
            check_amount(self.amount, minimum=0)
        ttl = default_ttl if self.ttl_seconds is None else self.ttl_seconds
        if not 1 <= ttl <= max_ttl:
            raise InvalidInput(f"ttl_seconds must be between 1 and {max_ttl}", code="invalid_ttl")
        props = _properties(self.properties)
        # a quantity only counts on a meter (an amount-only hold ignores it)
        qty = None if self.meter is None or self.quantity is None else check_quantity(self.quantity)
        return HoldRequest(
            self.customer_id,
            self.idempotency_key,
            self.amount,
            self.meter,
            qty,
            props,
            ttl,
            self.api_key_id,
            self.opened_by,
        )

    @property
    def counted(self) -> Decimal | None:
        """The estimated quantity a metered hold reserves (1 when none was given)."""
        if self.meter is None:
            return None
        return Decimal(1) if self.quantity is None else self.quantity

    def fingerprint(self) -> str:
        """Of a validated request."""
        return request_hash(
            {
                "amount": self.amount,
                "meter": self.meter,
                "quantity": self.counted,
                "properties": self.properties or {},
                "ttl": self.ttl_seconds,
            }
        )


@dataclass(frozen=True, slots=True)
class SettleRequest:
    """Charge a hold: for an ``amount``, or for the actual ``quantity`` (rated now), or both
    (the amount is charged, the quantity counted); a tokens meter's hold also by the actual
    token counts in ``properties`` alone. ``customer_id`` None: the admin, any customer's hold."""

    customer_id: str | None
    hold_id: str
    amount: int | None = None
    quantity: Any = None
    properties: Mapping[str, Any] | None = None
    by_server: bool = False  # a server key asks (may resolve a hold a server key opened)

    action = OpKind.SETTLE

    def validate(self) -> SettleRequest:
        if self.amount is None and self.quantity is None and not self.properties:
            raise InvalidInput(
                "settle takes an amount, a quantity, or (tokens meters) the actual token counts "
                "in properties",
                code="invalid_settle",
            )
        if self.amount is not None:
            check_amount(self.amount, minimum=0)
        qty = None if self.quantity is None else check_quantity(self.quantity)
        props = _properties(self.properties)
        return SettleRequest(self.customer_id, self.hold_id, self.amount, qty, props, self.by_server)

    def fingerprint(self) -> str:
        return _resolution_hash(self.action, self.amount, self.quantity, self.properties)


@dataclass(frozen=True, slots=True)
class ReleaseRequest:
    """Give a hold's credits back, charging nothing."""

    customer_id: str | None
    hold_id: str
    by_server: bool = False

    action = OpKind.RELEASE

    def validate(self) -> ReleaseRequest:
        return self

    def fingerprint(self) -> str:
        return _resolution_hash(self.action, None, None, None)


@dataclass(frozen=True, slots=True)
class ExtendRequest:
    """Move an open hold's expiry to ``ttl_seconds`` from now (never earlier than it was).
    ``customer_id`` None: the admin or a server key, any customer's hold."""

    customer_id: str | None
    hold_id: str
    ttl_seconds: int
    by_server: bool = False

    def validate(self, *, max_ttl: int) -> ExtendRequest:
        ttl = self.ttl_seconds
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 1 <= ttl <= max_ttl:
            raise InvalidInput(f"ttl_seconds must be between 1 and {max_ttl}", code="invalid_ttl")
        return self


def _resolution_hash(action: str, amount: int | None, quantity: Any, properties: Any) -> str:
    return request_hash(
        {"action": str(action), "amount": amount, "quantity": quantity, "properties": properties or {}}
    )


# ------------------------------------------------------------------------------------- refunds
@dataclass(frozen=True, slots=True)
class RefundRequest:
    """Give back ``amount`` (all that is left when None) of a charge (a usage event or a
    settled hold, by its operation id)."""

    operation_id: str
    idempotency_key: str
    amount: int | None = None
    reason: str | None = None

    def validate(self) -> RefundRequest:
        if self.amount is not None:
            check_amount(self.amount)
        check_idempotency_key(self.idempotency_key)
        return self

    def fingerprint(self) -> str:
        return request_hash({"operation_id": self.operation_id, "amount": self.amount})
