"""Request bodies of the keys routes."""

from __future__ import annotations

from pydantic import AwareDatetime, Field, StrictBool, StrictInt

from tollkeep.api.schemas import Strict

__all__ = ["KeyIn", "KeyPatch", "RotateIn"]


class KeyIn(Strict):
    name: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=2000)
    scopes: list[str] | None = Field(None, max_length=20)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    expires_at: AwareDatetime | None = None
    force_new: StrictBool = Field(False, description="Make a new key even if the customer has an active one")


class KeyPatch(Strict):
    name: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=2000)
    scopes: list[str] | None = Field(None, max_length=20)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    expires_at: AwareDatetime | None = None


class RotateIn(Strict):
    grace_seconds: StrictInt = Field(0, ge=0, le=30 * 86400)
    expires_at: AwareDatetime | None = Field(
        None, description="expiry of the new key (none by default: it never inherits the old key's)"
    )
