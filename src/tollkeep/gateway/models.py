"""The gateway's table: idempotent tool calls, so a retried call replays its stored result."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["GatewayCall"]


class GatewayCall(Base):
    """One call an agent made with an idempotency key (``params._meta["tollkeep/idempotency-key"]``
    on MCP), per customer: ``pending`` while it runs (until ``expires_at``), ``done`` with the
    result it delivered (replayed to a retry), ``failed`` (not charged; a retry runs it again,
    as ``attempt`` + 1)."""

    __tablename__ = "gateway_calls"
    __table_args__ = (
        UniqueConstraint("customer_id", "idempotency_key", name="uq_gateway_calls_customer_key"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    attempt: Mapped[int]
    hold_id: Mapped[str | None] = mapped_column(String(40))
    charged: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[dict[str, Any] | None]
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
