"""What the ledger's use cases answer: one frozen type each, and its JSON.

``to_json()`` is what an operation stores in ``operations.result`` (the replay cache: a retry
with the same key gets it back) and, with ``balance`` and ``duplicate``, what the API returns:
the keys and their order are the HTTP contract. Nothing else lives in the replay cache: what a
refund needs to know about earlier refunds is worked out from the journal (``rules.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from tollkeep.kit.clock import iso

__all__ = [
    "GrantResult",
    "HoldResolution",
    "HoldView",
    "OverdraftResult",
    "RefundResult",
    "SweepResult",
    "UsageResult",
    "answer",
    "replayed",
]


def answer(stored: Mapping[str, Any], balance: int) -> dict[str, Any]:
    """A first answer: the stored result, the balance after it, ``duplicate: false``."""
    return {**stored, "balance": balance, "duplicate": False}


def replayed(stored: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """A replay's answer: the stored result again, ``duplicate: true``. Rows written before the
    replay cache held only the response may carry a refund's ``attribution``: it is left out."""
    out = {k: v for k, v in stored.items() if k != "attribution"} if "attribution" in stored else {**stored}
    out.update(extra)
    out["duplicate"] = True
    return out


def _quantity(value: Any) -> str | None:
    return None if value is None else format(Decimal(value).normalize(), "f")


@dataclass(frozen=True, slots=True)
class UsageResult:
    event_id: str
    charged: int
    unit: str
    meter: str
    quantity: Decimal
    catalog_version: str
    created_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "charged": self.charged,
            "unit": self.unit,
            "meter": self.meter,
            "quantity": format(self.quantity.normalize(), "f"),
            "catalog_version": self.catalog_version,
            "created_at": iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class GrantResult:
    id: str
    operation_id: str
    customer_id: str
    amount: int
    source: str
    priority: int
    meter: str | None
    effective_at: datetime
    expires_at: datetime | None
    unit: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "operation_id": self.operation_id,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "source": str(self.source),
            "priority": self.priority,
            "meter": self.meter,
            "effective_at": iso(self.effective_at),
            "expires_at": iso(self.expires_at),
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class HoldView:
    """A hold as the API shows it (``GET /v1/holds/{id}``, and a new hold's answer)."""

    id: str
    customer_id: str
    amount: int
    status: str
    meter: str | None
    quantity: Decimal | None
    expires_at: datetime
    settled_amount: int | None
    unit: str

    @classmethod
    def of(cls, hold: Any, unit: str) -> HoldView:
        """From a ``holds`` row (or a dict of its columns)."""
        get: Callable[[str], Any] = hold.get if isinstance(hold, dict) else lambda k: getattr(hold, k, None)
        return cls(
            get("id"),
            get("customer_id"),
            get("amount"),
            get("status"),
            get("meter"),
            get("quantity"),
            get("expires_at"),
            get("settled_amount"),
            unit,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "amount": self.amount,
            "status": str(self.status),
            "meter": self.meter,
            "quantity": _quantity(self.quantity),
            "expires_at": iso(self.expires_at),
            "settled_amount": self.settled_amount,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class HoldResolution:
    """A hold settled, released or expired (stored on the operation and on the hold)."""

    id: str
    status: str
    amount: int
    settled_amount: int | None
    charged: int
    operation_id: str
    unit: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": str(self.status),
            "amount": self.amount,
            "settled_amount": self.settled_amount,
            "charged": self.charged,
            "operation_id": self.operation_id,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class RefundResult:
    id: str
    charge_id: str
    amount: int
    to_original_grants: int
    new_grant_id: str | None
    reason: str | None
    unit: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "charge_id": self.charge_id,
            "amount": self.amount,
            "to_original_grants": self.to_original_grants,
            "new_grant_id": self.new_grant_id,
            "reason": self.reason,
            "unit": self.unit,
        }


@dataclass(frozen=True, slots=True)
class OverdraftResult:
    customer_id: str
    overdraft_limit: int
    overdraft_used: int

    def to_json(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "overdraft_limit": self.overdraft_limit,
            "overdraft_used": self.overdraft_used,
        }


@dataclass(frozen=True, slots=True)
class SweepResult:
    holds_released: int
    grants_expired: int

    def to_json(self) -> dict[str, int]:
        return {"holds_released": self.holds_released, "grants_expired": self.grants_expired}
