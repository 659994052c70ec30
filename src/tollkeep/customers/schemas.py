"""Request bodies of the customers routes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = ["CustomerIn", "CustomerPatch"]


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
