"""Tables of the ledger: wallets, grants, operations, the journal, holds, meter counters."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = [
    "Grant",
    "Hold",
    "JournalEntry",
    "KeySpend",
    "Operation",
    "UniqueValue",
    "UsageCounter",
    "Wallet",
]


class Wallet(Base):
    __tablename__ = "wallets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), unique=True)
    overdraft_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    overdraft_used: Mapped[int] = mapped_column(BigInteger, default=0)
    # sum of ``remaining`` over all the wallet's grants, written with every journal entry that
    # moves it: the balance without reading every grant (``ledger verify`` checks it)
    credits: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # every grant with credits is live until this instant (none expired, none not yet in effect):
    # until then the balance is credits - overdraft_used with no grant read; NULL: not known
    live_until: Mapped[datetime | None]
    # Allowance of the current plan is granted up to this instant (exclusive); renewal is idempotent.
    allowance_until: Mapped[datetime | None]
    carryover_done: Mapped[bool] = mapped_column(Boolean, default=False)
    # the periods of the subscription billing the customer's plan (kit.clock.SubscriptionPeriods:
    # NULL when none): caps and tier counters count them instead of calendar months. Written by
    # the plans domain with the subscription's moves, read with the wallet lock (no extra query)
    period_anchor: Mapped[datetime | None]
    period_since: Mapped[datetime | None]
    period_until: Mapped[datetime | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Grant(Base):
    __tablename__ = "grants"
    __table_args__ = (
        # a charge reads a wallet's grants with credits in spend order (priority, expiring first by
        # expiry, oldest, id), a page at a time; and the few with credits that are not live now
        # (expired but not swept, not in effect yet) for the balance. No index holds ``remaining``,
        # which every debit changes: ``has_credits`` changes only when a grant empties or refills,
        # so a debit's UPDATE rewrites no index entry (on PostgreSQL it stays a HOT update).
        Index(
            "ix_grants_spend",
            "wallet_id",
            "has_credits",
            "priority",
            text("(expires_at IS NULL)"),
            "expires_at",
            "created_at",
            "id",
        ),
        Index("ix_grants_expiry", "wallet_id", "has_credits", "expires_at"),
        Index("ix_grants_pending", "wallet_id", "has_credits", "effective_at"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
    # ``remaining > 0``, written only when that changes (``ledger verify`` checks it)
    has_credits: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    source: Mapped[str] = mapped_column(String(32))
    priority: Mapped[int] = mapped_column(Integer, default=10)
    meter: Mapped[str | None] = mapped_column(String(64))
    effective_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    # set when the grant is ended for good (a plan change): it is never spendable again
    closed_at: Mapped[datetime | None]
    operation_id: Mapped[str] = mapped_column(String(40))
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class Operation(Base):
    """One idempotent ledger command (usage, grant, hold, settle, release, refund, expire, ...)."""

    __tablename__ = "operations"
    __table_args__ = (
        UniqueConstraint("wallet_id", "kind", "idempotency_key", name="uq_operations_idem"),
        Index("ix_operations_wallet_created", "wallet_id", "created_at"),
        Index("ix_operations_ref", "ref_id"),
    )
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    customer_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    amount: Mapped[int] = mapped_column(BigInteger)
    meter: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[Decimal | None]
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    catalog_version: Mapped[str | None] = mapped_column(String(80))
    ref_id: Mapped[str | None] = mapped_column(String(40))  # refund -> usage op, settle -> hold
    api_key_id: Mapped[str | None] = mapped_column(String(40))
    refunded: Mapped[int] = mapped_column(BigInteger, default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]


class JournalEntry(Base):
    """Append-only. ``delta`` changes a grant's remaining (grant_id set) or, with no grant, the
    wallet's overdraft (a negative delta draws on the overdraft, a positive one repays it)."""

    __tablename__ = "journal_entries"
    __table_args__ = (
        Index("ix_journal_wallet_id", "wallet_id", "id"),
        Index("ix_journal_grant", "grant_id"),
        Index("ix_journal_operation", "operation_id"),
        Index("ix_journal_hold", "hold_id"),
    )
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    wallet_id: Mapped[str] = mapped_column(String(40))
    grant_id: Mapped[str | None] = mapped_column(String(40))
    operation_id: Mapped[str] = mapped_column(String(40))
    hold_id: Mapped[str | None] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))
    delta: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]


class Hold(Base):
    __tablename__ = "holds"
    __table_args__ = (Index("ix_holds_status_expires", "status", "expires_at"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    customer_id: Mapped[str] = mapped_column(String(40))
    operation_id: Mapped[str] = mapped_column(String(40))
    amount: Mapped[int] = mapped_column(BigInteger)  # held when created
    status: Mapped[str] = mapped_column(String(16))  # open | settled | released | expired
    meter: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[Decimal | None]
    properties: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    catalog_version: Mapped[str | None] = mapped_column(String(80))
    expires_at: Mapped[datetime]
    settled_amount: Mapped[int | None] = mapped_column(BigInteger)
    resolution_hash: Mapped[str | None] = mapped_column(String(64))
    resolution_operation_id: Mapped[str | None] = mapped_column(String(40))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]
    # "server:<id>" when a server key opened it: then only a server key may resolve it
    opened_by: Mapped[str | None] = mapped_column(String(64))
    # the buyer's API key it was opened with: its amount counts against that key's spend limits
    # (a server key's hold has none here; its operation records the server key)
    api_key_id: Mapped[str | None] = mapped_column(String(40))


class UsageCounter(Base):
    """A meter's aggregate for one wallet and period (for caps and tiered rating)."""

    __tablename__ = "usage_counters"
    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "m:2026-03" (calendar), "sm:2026-03-17T09:30:00.000000Z" (a subscription's month): see
    # kit.clock.usage_period
    period: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[Decimal]
    allowance_used: Mapped[Decimal]


class UniqueValue(Base):
    __tablename__ = "unique_values"
    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)


class KeySpend(Base):
    """What an API key spent (charges, settled holds) and holds (open holds) on one UTC day,
    written in the transaction of the journal entries it counts (``ledger/keyspend.py``); a
    hold counts on the day it was opened, also when it settles later. ``ledger verify``
    recomputes it from the operations and holds."""

    __tablename__ = "key_spend"
    api_key_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    day: Mapped[str] = mapped_column(String(10), primary_key=True)  # YYYY-MM-DD (UTC)
    spent: Mapped[int] = mapped_column(BigInteger, default=0)
    held: Mapped[int] = mapped_column(BigInteger, default=0)
