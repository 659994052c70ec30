"""Tables of the keys domain."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["ApiKey", "KeyStatus"]


class KeyStatus(StrEnum):
    """``api_keys.status``. A suspended key can be resumed; a revoked key stays revoked."""

    ACTIVE = "active"
    SUSPENDED = "suspended"
    REVOKED = "revoked"


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    prefix: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    note: Mapped[str | None] = mapped_column(Text)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    ip_allowlist: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16), default=KeyStatus.ACTIVE.value)  # a KeyStatus
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    rotated_from: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    # ---- per-key limits (docs/keys.md#per-key-limits); NULL: none of its own ----------------
    # spend limits in ledger units: all time, per UTC day, per UTC month (the ledger enforces
    # them in the charge's transaction, counting open holds: ledger/keyspend.py)
    spend_limit: Mapped[int | None] = mapped_column(BigInteger)
    spend_limit_daily: Mapped[int | None] = mapped_column(BigInteger)
    spend_limit_monthly: Mapped[int | None] = mapped_column(BigInteger)
    # tool / route names or glob patterns the key may call (NULL: all)
    tools: Mapped[list[Any] | None] = mapped_column(JSON)
    # a `limits` string ("60/minute", "off"); NULL: the server's default
    rate_limit: Mapped[str | None] = mapped_column(String(200))
    # most calls in flight at once; NULL: the server's default
    max_concurrency: Mapped[int | None]
