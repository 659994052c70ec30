"""Events the keys domain emits (kit/events.py). Never with a plaintext key: by id and the
clear prefix only."""

from __future__ import annotations

from dataclasses import dataclass

from tollkeep.kit.events import Event

__all__ = ["KeyCreated", "KeyRevoked"]


@dataclass(frozen=True)
class KeyCreated(Event):
    """A buyer API key was issued (created, or made by a rotation: ``rotated_from``). A
    request answered with the customer's existing key issues none and emits nothing."""

    topic = "key.created"
    customer_id: str
    key_id: str
    prefix: str
    name: str | None
    scopes: list[str]
    expires_at: str | None
    rotated_from: str | None


@dataclass(frozen=True)
class KeyRevoked(Event):
    """A buyer API key was revoked (for good), by an operator or by a rotation without grace."""

    topic = "key.revoked"
    customer_id: str
    key_id: str
    prefix: str
