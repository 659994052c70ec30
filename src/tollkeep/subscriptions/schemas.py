"""Request bodies of the subscriptions routes."""

from __future__ import annotations

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = ["CancelIn", "SettleIn", "SubscriptionCreate", "TestClockIn"]


class SubscriptionCreate(Strict):
    customer_id: str = Field(min_length=1, max_length=64)
    plan: str = Field(min_length=1, max_length=64, description="a plan of the catalog with a price")
    provider: str = Field("manual", min_length=1, max_length=32, description="who invoices renewals")
    currency: str | None = Field(
        None, min_length=3, max_length=8, description="the listed price's currency (default: the plan's)"
    )


class CancelIn(Strict):
    at_period_end: bool = Field(False, description="true: cancel when the current period ends")


class SettleIn(Strict):
    provider_payment_ref: str | None = Field(None, max_length=255, description="the payment's id, if any")


class TestClockIn(Strict):
    advance_seconds: int = Field(ge=0, le=10 * 366 * 86_400, description="how far to move the clock")
