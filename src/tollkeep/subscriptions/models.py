"""Tables of subscriptions: the subscriptions and their invoices (one per subscription and cycle)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["Code", "CodeRedemption", "Invoice", "PlanChange", "Subscription"]


class Subscription(Base):
    """A customer's subscription to a plan. ``cycle``: the last cycle paid for (1: the first
    period, started at creation); its period is ``current_period_start``..``current_period_end``.
    ``next_action_at``: when the renewal worker looks at it next (period end, a retry, the end
    of the grace; None: nothing to do); a worker's claim moves it ahead by a lease."""

    __tablename__ = "subscriptions"
    __table_args__ = (
        Index("ix_subscriptions_due", "next_action_at"),
        UniqueConstraint("provider", "provider_ref", name="uq_subscriptions_provider_ref"),
    )
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
    # what a full period of the current plan was paid (listed minor units, after discount; None:
    # the plan's listed price): the credit of a plan change is this, for the time left
    period_price: Mapped[int | None] = mapped_column(BigInteger)
    discount_code: Mapped[str | None] = mapped_column(String(64))  # a "forever" code: every renewal
    # a subscription the provider bills itself (Stripe): its id there (unique per provider)
    provider_ref: Mapped[str | None] = mapped_column(String(255))
    paused_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Invoice(Base):
    """The invoice of one cycle of a subscription, with its rate audit: the listed price
    (``listed_currency``, ``listed_amount``), the ``rate`` (a Decimal as text: ``currency``
    units per listed unit), where it came from and when, and the ``amount`` owed in
    ``currency`` (integer minor units). Status: draft (not yet at the provider) → open → paid,
    or void."""

    __tablename__ = "invoices"
    __table_args__ = (
        UniqueConstraint("subscription_id", "cycle", "kind", "seq", name="uq_invoices_cycle_kind"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    cycle: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(16), default="renewal")  # renewal | upgrade
    seq: Mapped[int] = mapped_column(Integer, default=0)  # the n-th upgrade in the cycle (renewal: 0)
    plan: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(String(32))
    discount_code: Mapped[str | None] = mapped_column(String(64))
    discount_amount: Mapped[int] = mapped_column(BigInteger, default=0)  # listed minor units off
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


class PlanChange(Base):
    """A change of a subscription's plan: ``upgrade`` (an invoice for the prorated difference,
    applied when it is paid), ``zero`` (applied at once), ``downgrade`` (scheduled for the next
    renewal), ``admin`` (forced now). Status: pending (invoice open) / scheduled → applied, or
    canceled / void. ``idempotency_key``: one change per key and subscription."""

    __tablename__ = "plan_changes"
    __table_args__ = (
        UniqueConstraint("subscription_id", "idempotency_key", name="uq_plan_changes_idempotency"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subscription_id: Mapped[str] = mapped_column(ForeignKey("subscriptions.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    from_plan: Mapped[str] = mapped_column(String(64))
    to_plan: Mapped[str] = mapped_column(String(64))
    cycle: Mapped[int] = mapped_column(Integer)
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    invoice_id: Mapped[str | None] = mapped_column(String(40))
    paid_per_period: Mapped[int] = mapped_column(BigInteger)  # the credit base (listed minor units)
    new_per_period: Mapped[int] = mapped_column(BigInteger)  # the new plan's period, as it will be paid
    exact_owed: Mapped[str] = mapped_column(String(100))  # the unrounded proration (Decimal text)
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[int] = mapped_column(BigInteger)  # owed now, invoice currency, rounded once
    code: Mapped[str | None] = mapped_column(String(64))
    quoted_at: Mapped[datetime]
    effective_at: Mapped[datetime | None]
    applied_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Code(Base):
    """A code a buyer enters: ``discount`` (``percent`` or ``amount`` + ``currency`` off;
    ``duration`` once: the first period it meets, forever: every renewal too), ``free_plan``
    (the plans it names cost nothing, for ``duration``) or ``free_license`` (a licence of
    ``plan``). ``redemptions`` counts up to ``max_redemptions`` atomically; a customer redeems a
    code once (``code_redemptions``)."""

    __tablename__ = "codes"
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    percent: Mapped[int | None] = mapped_column(Integer)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(8))
    plans: Mapped[list[str]] = mapped_column(JSON, default=list)  # empty: every plan
    duration: Mapped[str] = mapped_column(String(16))  # once | forever
    max_redemptions: Mapped[int | None] = mapped_column(Integer)
    redemptions: Mapped[int] = mapped_column(Integer, default=0)
    expires_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CodeRedemption(Base):
    __tablename__ = "code_redemptions"
    __table_args__ = (UniqueConstraint("code", "customer_id", name="uq_code_redemptions_customer"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    code: Mapped[str] = mapped_column(ForeignKey("codes.code"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(40))
    license_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
