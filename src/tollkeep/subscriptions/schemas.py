"""Request bodies of the subscriptions routes."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = [
    "CancelIn",
    "ChangePlanIn",
    "CodeCreate",
    "CodeRedeemIn",
    "SettleIn",
    "SubscriptionCreate",
    "TestClockIn",
    "UpgradeIn",
    "UpgradeQuoteIn",
]


class SubscriptionCreate(Strict):
    customer_id: str = Field(min_length=1, max_length=64)
    plan: str = Field(min_length=1, max_length=64, description="a plan of the catalog with a price")
    provider: str = Field("manual", min_length=1, max_length=32, description="who invoices renewals")
    currency: str | None = Field(
        None, min_length=3, max_length=8, description="the listed price's currency (default: the plan's)"
    )
    code: str | None = Field(None, min_length=1, max_length=64, description="a discount or free-plan code")


class CancelIn(Strict):
    at_period_end: bool = Field(False, description="true: cancel when the current period ends")


class SettleIn(Strict):
    provider_payment_ref: str | None = Field(None, max_length=255, description="the payment's id, if any")


class TestClockIn(Strict):
    advance_seconds: int = Field(ge=0, le=10 * 366 * 86_400, description="how far to move the clock")


class UpgradeQuoteIn(Strict):
    plan: str = Field(min_length=1, max_length=64)
    subscription_id: str | None = Field(None, max_length=40)
    customer_id: str | None = Field(None, max_length=64, description="with a server key")
    code: str | None = Field(None, min_length=1, max_length=64)


class UpgradeIn(UpgradeQuoteIn):
    idempotency_key: str | None = Field(None, min_length=1, max_length=255, description="or the header")


class ChangePlanIn(Strict):
    plan: str = Field(min_length=1, max_length=64)
    when: Literal["now", "renewal"] = "now"


class CodeCreate(Strict):
    code: str = Field(min_length=1, max_length=64)
    kind: Literal["discount", "free_plan", "free_license"] = "discount"
    percent: int | None = Field(None, ge=1, le=100)
    amount: int | None = Field(None, ge=1, le=10**15, description="minor units of currency")
    currency: str | None = Field(None, min_length=3, max_length=8)
    plans: list[str] = Field(default_factory=list, max_length=100)
    duration: Literal["once", "forever"] = "once"
    max_redemptions: int | None = Field(None, ge=1, le=10**9)
    expires_at: datetime | None = None


class CodeRedeemIn(Strict):
    code: str = Field(min_length=1, max_length=64)
    customer_id: str | None = Field(None, max_length=64, description="with a server key")
