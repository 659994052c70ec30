"""Tables of licensing: the signing keys, the licences, and the machines activated on them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from tollkeep.kit.models import Base

__all__ = ["License", "LicenseMachine", "LicenseSigningKey"]


class LicenseSigningKey(Base):
    """An Ed25519 key pair licences are signed with. The newest unretired one signs; retired
    ones stay in the JWKS so licences they signed keep verifying. ``private_pem`` is PKCS#8,
    encrypted with ``TOLLKEEP_LICENSE_KEY_PASSPHRASE`` when that is set (``encrypted``)."""

    __tablename__ = "license_signing_keys"
    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    public_x: Mapped[str] = mapped_column(String(64))  # base64url of the 32 raw bytes (JWK "x")
    private_pem: Mapped[str] = mapped_column(Text)
    encrypted: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]


class License(Base):
    """A licence: who, which plan, how many machines, until when. ``key_version`` grows when
    the licence is re-issued with new terms (same ``id``). ``subscription_id``: the subscription
    it follows (unique: one licence per subscription), None for one issued on its own."""

    __tablename__ = "licenses"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), index=True)
    plan: Mapped[str] = mapped_column(String(64))
    entitlements: Mapped[list[str]] = mapped_column(JSON, default=list)
    max_machines: Mapped[int | None] = mapped_column(Integer)
    expires_at: Mapped[datetime | None]
    grace_seconds: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))  # active | revoked
    key_version: Mapped[int] = mapped_column(Integer)
    note: Mapped[str | None] = mapped_column(String(255))
    subscription_id: Mapped[str | None] = mapped_column(String(40), unique=True)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LicenseMachine(Base):
    """A machine activated on a licence, by the SHA-256 of its fingerprint (never the raw one)."""

    __tablename__ = "license_machines"
    __table_args__ = (UniqueConstraint("license_id", "fingerprint_hash", name="uq_license_machines_fp"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    license_id: Mapped[str] = mapped_column(ForeignKey("licenses.id"), index=True)
    fingerprint_hash: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))  # active | deactivated
    activated_at: Mapped[datetime]
    last_seen_at: Mapped[datetime]
    deactivated_at: Mapped[datetime | None]
