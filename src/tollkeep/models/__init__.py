"""ORM models: one MetaData with a naming convention so Alembic names are stable.

Money columns are BigInteger in the catalog's declared unit; quantities and
meter aggregates are Decimal text (exact on SQLite and PostgreSQL alike).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = [
    "ApiKey",
    "Base",
    "CatalogVersion",
    "Customer",
    "Grant",
    "Hold",
    "JournalEntry",
    "Operation",
    "UniqueValue",
    "UsageCounter",
    "Wallet",
    "table_of",
]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Stored as naive UTC, always returned timezone-aware."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


class DecimalText(TypeDecorator[Decimal]):
    """An exact decimal kept as text (SQLite has no exact numeric type)."""

    impl = String(64)
    cache_ok = True

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> str | None:
        if value is None:
            return None
        return format(Decimal(value).normalize(), "f")

    def process_result_value(self, value: str | None, dialect: Dialect) -> Decimal | None:
        return None if value is None else Decimal(value)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[Any]: JSON, Decimal: DecimalText}


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str | None] = mapped_column(String(320))
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended | closed
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    plan: Mapped[str | None] = mapped_column(String(64))
    plan_changed_at: Mapped[datetime | None]
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSON, default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Wallet(Base):
    __tablename__ = "wallets"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), unique=True)
    overdraft_limit: Mapped[int] = mapped_column(BigInteger, default=0)
    overdraft_used: Mapped[int] = mapped_column(BigInteger, default=0)
    # Allowance of the current plan is granted up to this instant (exclusive); renewal is idempotent.
    allowance_until: Mapped[datetime | None]
    carryover_done: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Grant(Base):
    __tablename__ = "grants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    amount: Mapped[int] = mapped_column(BigInteger)
    remaining: Mapped[int] = mapped_column(BigInteger)
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


class UsageCounter(Base):
    """A meter's aggregate for one wallet and period (for caps and tiered rating)."""

    __tablename__ = "usage_counters"
    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[Decimal]
    allowance_used: Mapped[Decimal]


class UniqueValue(Base):
    __tablename__ = "unique_values"
    wallet_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    meter: Mapped[str] = mapped_column(String(64), primary_key=True)
    period: Mapped[str] = mapped_column(String(16), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)


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
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | suspended | revoked
    expires_at: Mapped[datetime | None]
    last_used_at: Mapped[datetime | None]
    rotated_from: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class CatalogVersion(Base):
    __tablename__ = "catalog_versions"
    version: Mapped[str] = mapped_column(String(80), primary_key=True)
    source: Mapped[str | None] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    loaded_at: Mapped[datetime]


def table_of(model: type[Base]) -> Table:
    """The Core table of a model, typed as a Table (for insert/update on the hot path)."""
    return cast(Table, model.__table__)
