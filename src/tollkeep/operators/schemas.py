"""Request bodies of the operators routes."""

from __future__ import annotations

from pydantic import Field

from tollkeep.api.schemas import Strict

__all__ = ["AdminTokenIn", "ServerKeyIn"]


class ServerKeyIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    scopes: list[str] | None = Field(
        None, max_length=10, description="default: every server scope (usage, holds, balance, keys:verify)"
    )


class AdminTokenIn(Strict):
    name: str = Field(min_length=1, max_length=255)
    role: str = Field("admin", description="admin, or read_only (GET /admin/... only)")
