"""Tables of the operators domain: the seller's own credentials."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["OperatorKey"]


class OperatorKey(Base):
    """An admin token (``tka_…``, a role) or a server key (``tk_sk_…``, scopes): shown once,
    stored as SHA-256 behind a clear look-up handle, like buyers' API keys."""

    __tablename__ = "operator_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # admin | server
    name: Mapped[str] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(16))  # admin tokens: admin | read_only
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)  # server keys
    prefix: Mapped[str] = mapped_column(String(64), unique=True)
    hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | revoked
    created_by: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
