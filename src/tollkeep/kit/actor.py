"""Who is acting: an admin token, a server key, the CLI on the machine, or the system's own
jobs. Captured where a request or command starts, carried into its unit of work, and written
to the audit log with what it did."""

from __future__ import annotations

import getpass
from dataclasses import dataclass
from enum import StrEnum

from tollkeep.kit.errors import Forbidden

__all__ = ["SYSTEM", "Actor", "Role", "cli_actor"]


class Role(StrEnum):
    ADMIN = "admin"  # every /admin route
    READ_ONLY = "read_only"  # GET /admin/... only


@dataclass(frozen=True)
class Actor:
    """Who did something: an admin token (``kind="admin"``), a server key (``"server"``), the
    CLI on the machine (``"cli"``), the system itself (``"system"``: jobs)."""

    kind: str
    id: str
    role: str | None = None
    scopes: frozenset[str] = frozenset()
    address: str | None = None

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.id}"

    def require_write(self) -> None:
        if self.kind == "admin" and self.role == Role.READ_ONLY:
            raise Forbidden("this admin token is read-only", code="read_only_token")

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(
                f"this server key lacks the {scope!r} scope",
                code="insufficient_scope",
                details={"scope": scope},
            )


SYSTEM = Actor("system", "tollkeep")


def cli_actor() -> Actor:
    """The operator at this machine's shell (the OS user, as far as it can be known)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user database entry (containers)
        user = "unknown"
    return Actor("cli", user, Role.ADMIN)
