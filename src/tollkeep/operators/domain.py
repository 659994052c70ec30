"""Who operates tollkeep, pure: actors, roles, scopes and key formats. No database."""

from __future__ import annotations

import hashlib
import secrets
from enum import StrEnum

from tollkeep.kit.actor import Actor, Role

__all__ = [
    "ADMIN_PREFIX",
    "ENV_ADMIN",
    "HANDLE_CHARS",
    "SERVER_PREFIX",
    "SERVER_SCOPES",
    "Actor",
    "OperatorKind",
    "Role",
    "digest",
    "handle_of",
    "new_secret",
]

ADMIN_PREFIX = "tka_"
SERVER_PREFIX = "tk_sk_"
HANDLE_CHARS = 12
# what a server key may do on /v1 for any customer; all of them by default
SERVER_SCOPES = ("usage:write", "holds:write", "balance:read", "usage:read", "keys:verify")


class OperatorKind(StrEnum):
    ADMIN = "admin"
    SERVER = "server"


# the token in TOLLKEEP_ADMIN_TOKEN: an admin with a fixed id, so the audit log can name it
ENV_ADMIN = Actor("admin", "env", Role.ADMIN)


def new_secret(prefix: str) -> str:
    return f"{prefix}{secrets.token_urlsafe(32)}"


def handle_of(raw: str, prefix: str) -> str:
    return raw[: len(prefix) + HANDLE_CHARS]


def digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
