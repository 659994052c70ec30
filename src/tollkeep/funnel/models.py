"""Tables of the funnel: each customer's first time at each stage, and the scan positions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["FunnelCursor", "FunnelEvent"]


class FunnelEvent(Base):
    """A customer reached a stage (acquisition, activation, paid): once per customer and stage."""

    __tablename__ = "funnel_events"
    __table_args__ = (
        UniqueConstraint("customer_id", "stage", name="uq_funnel_events_customer_stage"),
        Index("ix_funnel_events_stage_at", "stage", "at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    stage: Mapped[str] = mapped_column(String(16))
    source: Mapped[str | None] = mapped_column(String(32))
    provider: Mapped[str | None] = mapped_column(String(32))
    at: Mapped[datetime]


class FunnelCursor(Base):
    """How far the catch-up scans have read (customers, charges): ids are time-ordered."""

    __tablename__ = "funnel_cursors"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    position: Mapped[str] = mapped_column(String(40))
