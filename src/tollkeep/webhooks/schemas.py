"""Request bodies of the webhooks routes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = ["EndpointIn", "EndpointPatch", "RotateIn"]

Events = Field(
    None,
    max_length=64,
    description='event types, e.g. ["customer.created", "credits.*"]; null: every event',
)


class EndpointIn(Strict):
    url: str = Field(min_length=1, max_length=2048, description="http(s) URL the events are POSTed to")
    events: list[str] | None = Events
    description: str | None = Field(None, max_length=255)


class EndpointPatch(Strict):
    url: str | None = Field(None, min_length=1, max_length=2048)
    events: list[str] | None = Events
    description: str | None = Field(None, max_length=255)
    status: Literal["enabled", "disabled"] | None = None


class RotateIn(Strict):
    overlap_seconds: int = Field(
        0, ge=0, le=7 * 86400, description="keep signing with the old secret too for this long (0: stop now)"
    )
