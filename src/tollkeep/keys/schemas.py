"""Request bodies of the keys routes."""

from __future__ import annotations

from pydantic import AwareDatetime, Field, StrictBool, StrictInt

from tollkeep.api.schemas import Strict

__all__ = ["KeyIn", "KeyLimitsIn", "KeyPatch", "RotateIn"]


class KeyLimitsIn(Strict):
    """A key's own limits (docs/keys.md#per-key-limits). On create, absent or null: none; on
    update, absent: unchanged, null: cleared."""

    spend_limit: StrictInt | None = Field(
        None, ge=0, description="Most the key may ever spend, in ledger units (open holds count)"
    )
    spend_limit_daily: StrictInt | None = Field(None, ge=0, description="Most per UTC day")
    spend_limit_monthly: StrictInt | None = Field(None, ge=0, description="Most per UTC month")
    tools: list[str] | None = Field(
        None, max_length=200, description="Tool / route names or glob patterns the key may call (null: all)"
    )
    rate_limit: str | None = Field(
        None,
        max_length=200,
        description="The key's rate limit, e.g. '60/minute' or '10/second;1000/day' ('off': none; "
        "null: the server's default)",
    )
    max_concurrency: StrictInt | None = Field(
        None, ge=1, le=100_000, description="Most calls in flight at once (null: the server's default)"
    )


class KeyIn(KeyLimitsIn):
    name: str | None = Field(None, max_length=255)
    note: str | None = Field(None, max_length=2000)
    scopes: list[str] | None = Field(None, max_length=20)
    ip_allowlist: list[str] | None = Field(None, max_length=100)
    expires_at: AwareDatetime | None = None
    force_new: StrictBool = Field(False, description="Make a new key even if the customer has an active one")


class KeyPatch(KeyLimitsIn):
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
