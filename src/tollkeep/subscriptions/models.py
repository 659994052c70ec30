"""Tables of subscriptions: the subscriptions and their invoices (one per subscription and cycle)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["Invoice", "Subscription"]


class Subscription(Base):
    """A customer's subscription to a plan. ``cycle``: the last cycle paid for (1: the first
    period, started at creation); its period is ``current_period_start``..``current_period_end``.
    ``next_action_at``: when the renewal worker looks at it next (period end, a retry, the end
    of the grace; None: nothing to do); a worker's claim moves it ahead by a lease."""

    __tablename__ = "subscriptions"
    __table_args__ = (Index("ix_subscriptions_due", "next_action_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    plan: Mapped[str] = mapped_column(String(64))
    provider: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    cycle: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime]
    anchor_at: Mapped[datetime]  # start of the first paid cycle (== started_at without a trial)
    current_period_start: Mapped[datetime]
    current_period_end: Mapped[datetime]
    cancel_at_period_end: Mapped[bool] = mapped_column(Boolean, default=False)
    currency: Mapped[str] = mapped_column(String(8))  # the plan's listed price currency
    invoice_currency: Mapped[str] = mapped_column(String(8))  # what invoices are paid in
    next_action_at: Mapped[datetime | None]
    renewal_failures: Mapped[int] = mapped_column(Integer, default=0)
    renewal_error: Mapped[str | None] = mapped_column(String(500))
    renewal_retry_at: Mapped[datetime | None]  # next attempt to create the renewal invoice
    suspended_keys: Mapped[list[str]] = mapped_column(JSON, default=list)
    canceled_at: Mapped[datetime | None]
    lapsed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Invoice(Base):
    """The invoice of one cycle of a subscription, with its rate audit: the listed price
    (``listed_currency``, ``listed_amount``), the ``rate`` (a Decimal as text: ``currency``
    units per listed unit), where it came from and when, and the ``amount`` owed in
    ``currency`` (integer minor units). Status: draft (not yet at the provider) → open → paid,
    or void."""

    __tablename__ = "invoices"
    __table_args__ = (UniqueConstraint("subscription_id", "cycle", name="uq_invoices_cycle"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    plan: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    provider_invoice_ref: Mapped[str | None] = mapped_column(String(255))
    provider_payment_ref: Mapped[str | None] = mapped_column(String(255))
    pay_url: Mapped[str | None] = mapped_column(String(1000))
    listed_currency: Mapped[str] = mapped_column(String(8))
    listed_amount: Mapped[int] = mapped_column(BigInteger)
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    rate: Mapped[Decimal]
    rate_source: Mapped[str] = mapped_column(String(64))
    rated_at: Mapped[datetime]
    period_start: Mapped[datetime]
    period_end: Mapped[datetime]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    opened_at: Mapped[datetime | None]
    paid_at: Mapped[datetime | None]
    voided_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]
