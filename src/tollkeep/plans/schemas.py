"""Request bodies of the plans routes."""

from __future__ import annotations

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = ["PlanIn"]


class PlanIn(Strict):
    plan: str | None = Field(min_length=1, max_length=64, description="a plan key, or null for none")
