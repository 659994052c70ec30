"""Request bodies of the licensing routes."""

from __future__ import annotations

from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

__all__ = ["LicenseCreate", "LicenseKeyIn", "LicenseUpdate", "MachineIn", "RecoverIn"]

KEY = Field(..., min_length=1, max_length=8192, description="the licence key (a compact JWS)")
FINGERPRINT = Field(..., min_length=1, max_length=512, description="a stable id of the machine")


class LicenseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: str = Field(..., min_length=1, max_length=64)
    plan: str = Field(..., min_length=1, max_length=64, description="a plan of the catalog")
    max_machines: int | None = Field(
        None, ge=1, le=1_000_000, description="omitted: the plan's max_machines; null: unlimited"
    )
    expires_at: AwareDatetime | None = Field(None, description="null: never expires")
    grace_seconds: int | None = Field(
        None, ge=0, le=366 * 86_400, description="how long a machine may stay offline (default 7 days)"
    )
    note: str | None = Field(None, max_length=255)


class LicenseUpdate(BaseModel):
    """New terms on the same licence id (the key is re-issued with a higher version)."""

    model_config = ConfigDict(extra="forbid")

    plan: str | None = Field(None, min_length=1, max_length=64)
    max_machines: int | None = Field(None, ge=1, le=1_000_000, description="null: unlimited")
    expires_at: datetime | None = Field(None, description="null: never expires")


class LicenseKeyIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = KEY
    fingerprint: str | None = Field(None, min_length=1, max_length=512)


class MachineIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = KEY
    fingerprint: str = FINGERPRINT
    name: str | None = Field(None, max_length=255, description="a label for the operator")


class RecoverIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: str = Field(..., min_length=3, max_length=320)
