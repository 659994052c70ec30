"""Tables of the payments domain: the inbox of provider webhooks, checkouts, payments and their
refunds, and the link between a provider's account and our customer."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Index, Integer, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["Checkout", "InboxEvent", "Payment", "PaymentRefund", "ProviderCustomer"]


class InboxEvent(Base):
    """One provider webhook, verified and stored raw before anything acts on it (unique per
    provider and provider event id: a duplicate delivery adds nothing). ``status``: pending →
    processed | ignored | failed; a claim leases the row (``available_at``, ``claimed_by``)."""

    __tablename__ = "inbox_events"
    __table_args__ = (
        UniqueConstraint("provider", "event_id", name="uq_inbox_events_provider_event"),
        Index(
            "ix_inbox_events_pending",
            "available_at",
            sqlite_where=text("status = 'pending'"),
            postgresql_where=text("status = 'pending'"),
        ),
        Index("ix_inbox_events_status_received", "status", "received_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # ibx_<time-ordered>
    provider: Mapped[str] = mapped_column(String(32))
    event_id: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime]
    available_at: Mapped[datetime]
    claimed_by: Mapped[str | None] = mapped_column(String(128))
    processed_at: Mapped[datetime | None]
    error: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Checkout(Base):
    """A payment page we asked a provider for (or the local one). The buyer's API key is shown
    once, to whoever holds the claim token (stored as its SHA-256)."""

    __tablename__ = "checkouts"
    __table_args__ = (Index("ix_checkouts_provider_ref", "provider", "provider_ref"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # chk_…
    provider: Mapped[str] = mapped_column(String(32))
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    new_customer: Mapped[bool] = mapped_column(default=False)  # created for this checkout
    email: Mapped[str | None] = mapped_column(String(320))
    pack: Mapped[str | None] = mapped_column(String(64))
    plan: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)
    url: Mapped[str] = mapped_column(Text)
    success_url: Mapped[str] = mapped_column(Text)
    cancel_url: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # open | paid | expired
    claim_hash: Mapped[str] = mapped_column(String(64))
    claimed_at: Mapped[datetime | None]
    key_id: Mapped[str | None] = mapped_column(String(40))
    payment_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    paid_at: Mapped[datetime | None]


class Payment(Base):
    """A settled (or failed) payment, once per provider payment id: what it bought and the grant
    it made, so a refund knows what to take back."""

    __tablename__ = "payments"
    __table_args__ = (UniqueConstraint("provider", "payment_id", name="uq_payments_provider_payment"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # pay_…
    provider: Mapped[str] = mapped_column(String(32))
    payment_id: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    checkout_id: Mapped[str | None] = mapped_column(String(40))
    inbox_id: Mapped[str | None] = mapped_column(String(40))
    status: Mapped[str] = mapped_column(String(24))  # succeeded | failed | refunded | partially_refunded
    pack: Mapped[str | None] = mapped_column(String(64))
    plan: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    credits: Mapped[int] = mapped_column(BigInteger, default=0)
    grant_id: Mapped[str | None] = mapped_column(String(40))
    refunded_amount: Mapped[int] = mapped_column(BigInteger, default=0)
    credits_taken_back: Mapped[int] = mapped_column(BigInteger, default=0)
    shortfall: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PaymentRefund(Base):
    """One refund of a payment, once per provider refund id."""

    __tablename__ = "payment_refunds"
    __table_args__ = (UniqueConstraint("provider", "refund_id", name="uq_payment_refunds_provider_refund"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)  # prf_…
    provider: Mapped[str] = mapped_column(String(32))
    refund_id: Mapped[str] = mapped_column(String(255))
    payment: Mapped[str] = mapped_column(String(40), index=True)  # payments.id
    amount: Mapped[int] = mapped_column(BigInteger)
    credits: Mapped[int] = mapped_column(BigInteger)  # credits it should take back
    taken: Mapped[int] = mapped_column(BigInteger)  # what the ledger could take
    shortfall: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class ProviderCustomer(Base):
    """A provider's account (``stripe:cus_…``, ``github:4242``) is one of our customers."""

    __tablename__ = "provider_customers"
    __table_args__ = (UniqueConstraint("provider", "external_ref", name="uq_provider_customers_ref"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    provider: Mapped[str] = mapped_column(String(32))
    external_ref: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    created_at: Mapped[datetime]
