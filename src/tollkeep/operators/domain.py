"""Who operates tollkeep, pure: actors, roles, scopes and key formats. No database."""

from __future__ import annotations

from enum import StrEnum

from tollkeep.kit.actor import Actor, Role
from tollkeep.kit.secrets import HANDLE_CHARS, digest, handle_of, new_secret

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
# what a server key may do on /v1 for any customer; all of them by default
SERVER_SCOPES = ("usage:write", "holds:write", "balance:read", "usage:read", "keys:verify")


class OperatorKind(StrEnum):
    ADMIN = "admin"
    SERVER = "server"


# the token in TOLLKEEP_ADMIN_TOKEN: an admin with a fixed id, so the audit log can name it
ENV_ADMIN = Actor("admin", "env", Role.ADMIN)
