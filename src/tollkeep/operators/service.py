"""The seller's credentials: admin tokens with a role, and server keys with scopes.

Both are shown once at creation and stored as SHA-256 behind a clear handle, like buyers'
keys. Authentication is cached per process for ``cache_seconds``; revoking drops the key
from this process's cache at once (other processes within the cache time).
"""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from typing import Any

from tollkeep.audit import record
from tollkeep.kit.clock import Clock, SystemClock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import AuthError, Conflict, InvalidInput, NotFound
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.jsonsafe import check_text
from tollkeep.operators import repository as repo
from tollkeep.operators.domain import (
    ADMIN_PREFIX,
    ENV_ADMIN,
    HANDLE_CHARS,
    SERVER_PREFIX,
    SERVER_SCOPES,
    Actor,
    OperatorKind,
    Role,
    digest,
    handle_of,
    new_secret,
)

__all__ = ["OperatorService", "operator_view"]


def operator_view(row: Any) -> dict[str, Any]:
    out = {
        "id": row.id,
        "kind": row.kind,
        "name": row.name,
        "prefix": row.prefix,
        "status": row.status,
        "created_by": row.created_by,
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
        "last_used_at": iso(row.last_used_at),
    }
    if row.kind == OperatorKind.ADMIN:
        out["role"] = row.role
    else:
        out["scopes"] = list(row.scopes or [])
    return out


class OperatorService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        *,
        env_admin_token: Callable[[], str | None],
        cache_seconds: float = 5.0,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.env_admin_token = env_admin_token
        self.cache_seconds = cache_seconds
        self.clock = clock or SystemClock()
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    # ---- provisioning ---------------------------------------------------------------------------
    def create_admin_token(self, name: str, role: str, *, actor: Actor) -> dict[str, Any]:
        if role not in tuple(Role):
            raise InvalidInput(f"role must be one of {', '.join(Role)}", code="invalid_role")
        return self._create(OperatorKind.ADMIN, name, actor, role=role, scopes=[])

    def create_server_key(self, name: str, scopes: list[str] | None, *, actor: Actor) -> dict[str, Any]:
        chosen = list(SERVER_SCOPES) if scopes is None else list(dict.fromkeys(scopes))
        bad = [sc for sc in chosen if sc not in SERVER_SCOPES]
        if bad or not chosen:
            raise InvalidInput(
                f"scopes must be a non-empty subset of {', '.join(SERVER_SCOPES)} (got {bad or chosen})",
                code="invalid_scope",
            )
        return self._create(OperatorKind.SERVER, name, actor, role=None, scopes=chosen)

    def _create(
        self, kind: OperatorKind, name: str, actor: Actor, *, role: str | None, scopes: list[str]
    ) -> dict[str, Any]:
        name = (name or "").strip()
        if not 1 <= len(name) <= 255:
            raise InvalidInput("name is required (1-255 characters)", code="invalid_name")
        check_text(name, "name")
        prefix = ADMIN_PREFIX if kind == OperatorKind.ADMIN else SERVER_PREFIX
        raw = new_secret(prefix)
        row: dict[str, Any] = {
            "id": new_id("adm" if kind == OperatorKind.ADMIN else "sk"),
            "kind": str(kind),
            "name": name,
            "role": role,
            "scopes": scopes,
            "prefix": handle_of(raw, prefix),
            "hash": digest(raw),
            "status": "active",
            "created_by": actor.label,
            "revoked_at": None,
            "last_used_at": None,
        }

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            repo.insert_key(s, {**row, "created_at": now})
            view = operator_view(repo.get(s, row["id"]))
            record(s, actor, f"{kind}_key.create", ("operator_key", row["id"]), after=view, at=now)
            return view

        return {**self.executor.call(fn), "key": raw}

    def revoke(self, kind: str, key_id: str, *, actor: Actor) -> dict[str, Any]:
        def fn(s: Tx) -> dict[str, Any]:
            row = repo.get(s, key_id, kind=kind)
            if row is None:
                raise NotFound(f"{kind} key {key_id!r} not found", code="operator_key_not_found")
            if row.status == "revoked":
                raise Conflict("this key is revoked already", code="key_revoked")
            now = self.clock.now()
            before = operator_view(row)
            repo.set_key(s, key_id, status="revoked", revoked_at=now)
            after = operator_view(repo.get(s, key_id))
            record(
                s, actor, f"{kind}_key.revoke", ("operator_key", key_id), before=before, after=after, at=now
            )
            return after

        out = self.executor.call(fn)
        with self._lock:
            self._cache.pop(out["prefix"], None)
        return out

    def any_admin_tokens(self) -> bool:
        """Is there an active admin token in the database (besides TOLLKEEP_ADMIN_TOKEN)?"""
        with self.db.scope(write=False) as s:
            return any(r.status == "active" for r in repo.list_keys(s, OperatorKind.ADMIN))

    def list(self, kind: str) -> list[dict[str, Any]]:
        with self.db.scope(write=False) as s:
            return [operator_view(r) for r in repo.list_keys(s, kind)]

    # ---- authentication -----------------------------------------------------------------------------
    def authenticate(self, raw: str, address: str | None = None) -> Actor:
        """The actor behind an admin token or a server key, or :class:`AuthError`."""
        env = self.env_admin_token()
        if env and hmac.compare_digest(raw.encode(), env.encode()):
            return Actor(ENV_ADMIN.kind, ENV_ADMIN.id, ENV_ADMIN.role, address=address)
        prefix = SERVER_PREFIX if raw.startswith(SERVER_PREFIX) else ADMIN_PREFIX
        if not raw.startswith(prefix) or not len(prefix) + HANDLE_CHARS <= len(raw) <= 256:
            raise AuthError("invalid token", code="invalid_token")
        handle = handle_of(raw, prefix)
        row = self._row(handle)
        if row is None or not hmac.compare_digest(row.hash, digest(raw)):
            raise AuthError("invalid token", code="invalid_token")
        if row.status != "active":
            raise AuthError("this token was revoked", code="key_revoked")
        if row.kind == OperatorKind.ADMIN:
            return Actor("admin", row.id, row.role, address=address)
        return Actor("server", row.id, None, frozenset(row.scopes or ()), address=address)

    def _row(self, handle: str) -> Any:
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(handle)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        with self.db.scope(write=False) as s:
            row = repo.by_handle(s, handle)
        if row is not None and self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) > 10_000:
                    self._cache.clear()
                self._cache[handle] = (now, row)
        return row
