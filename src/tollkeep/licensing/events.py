"""Events the licensing domain emits (kit/events.py); all go to the outbox (webhooks)."""

from __future__ import annotations

from dataclasses import dataclass, field

from tollkeep.kit.events import Event

__all__ = ["LicenseCreated", "LicenseRecoveryRequested", "LicenseRevoked", "LicenseUpdated"]


@dataclass(frozen=True)
class LicenseCreated(Event):
    topic = "license.created"
    license_id: str
    customer_id: str
    plan: str


@dataclass(frozen=True)
class LicenseUpdated(Event):
    """New terms on the same licence id (plan, entitlements, machines, expiry): the app sees
    them at its next online validation, which hands it the re-issued key."""

    topic = "license.tier_changed"
    license_id: str
    customer_id: str
    plan: str
    key_version: int
    # which terms moved: ["expires_at"] alone is a renewal (or an expiry), not a new tier
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LicenseRevoked(Event):
    topic = "license.revoked"
    license_id: str
    customer_id: str


@dataclass(frozen=True)
class LicenseRecoveryRequested(Event):
    """Someone asked to recover the licences of ``email``: the seller's endpoint gets the
    re-issued keys (same licence ids) to send to that address. The requester gets nothing back
    but "if it exists, it was sent", so the route tells nobody whether an email is known."""

    topic = "license.recovery_requested"
    email: str
    customer_id: str
    licenses: list[dict[str, str]]
