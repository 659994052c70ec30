"""Request bodies of the payments routes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CheckoutIn"]


class CheckoutIn(BaseModel):
    """Buy a credit pack or a plan. Exactly one of ``pack`` / ``plan``."""

    model_config = ConfigDict(extra="forbid")

    pack: str | None = Field(None, max_length=64, description="a key of the catalog's [packs.*]")
    plan: str | None = Field(None, max_length=64, description="a paid plan of the catalog")
    provider: str | None = Field(
        None, max_length=32, description="stripe | btcpay | zaprite | local (default: the configured one)"
    )
    currency: str | None = Field(
        None, min_length=3, max_length=3, description="default: usd, else the first price"
    )
    success_url: str | None = Field(None, max_length=2000, description="where the buyer lands after paying")
    cancel_url: str | None = Field(None, max_length=2000)
    email: str | None = Field(None, max_length=320, description="an anonymous buyer's email (no API key yet)")
    customer_id: str | None = Field(None, max_length=64, description="with a server key: the buyer")
