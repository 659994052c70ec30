"""The outbox table: domain events waiting to leave the process (webhooks, exports)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["OutboxEvent"]


class OutboxEvent(Base):
    """One event, written in the same transaction as the change it reports."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        # the undelivered rows only, in order: what the dispatcher claims
        Index(
            "ix_outbox_events_pending",
            "id",
            sqlite_where=text("delivered_at IS NULL"),
            postgresql_where=text("delivered_at IS NULL"),
        ),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # evt_<time-ordered>
    topic: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str | None] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime]
    # not handed out before this instant: a failed delivery's back-off, or a claim's lease
    available_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
