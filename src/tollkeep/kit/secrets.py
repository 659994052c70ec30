"""The format every bearer secret tollkeep issues shares (buyers' API keys, admin tokens,
server keys): a readable prefix, 32 random bytes, a clear look-up handle, a SHA-256 digest.

A fast hash is right here: the secrets carry 256 random bits, so there is nothing to
brute-force, unlike a password."""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["HANDLE_CHARS", "digest", "handle_of", "new_secret"]

HANDLE_CHARS = 12  # characters after the prefix kept in clear to find the row


def new_secret(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(32)}"


def handle_of(raw: str, prefix: str) -> str:
    return raw[: len(prefix) + HANDLE_CHARS]


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
