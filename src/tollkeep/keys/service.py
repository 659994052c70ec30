"""API keys: 32 random bytes behind a readable prefix, shown once, stored as SHA-256.

A key looks like ``tk_live_<43 url-safe characters>``. The first 12 characters after the
prefix are stored in clear as the look-up handle; the whole key is stored only as its
SHA-256 digest (the key has 256 bits of entropy, so a slow password hash buys nothing)
and compared in constant time. Verified keys are cached for ``key_cache_seconds``;
revoking, suspending or rotating a key drops it from this process's cache at once
(other replicas within the cache time).
"""

from __future__ import annotations

import hmac
import ipaddress
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import SimpleNamespace
from typing import Any

from limits import parse_many

from tollkeep.audit import record
from tollkeep.customers import CustomerStatusChanged
from tollkeep.keys import repository as repo
from tollkeep.keys.events import KeyCreated, KeyRevoked
from tollkeep.keys.models import KeyStatus
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, SystemClock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import AuthError, Conflict, Forbidden, InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import Command, WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.jsonsafe import check_text
from tollkeep.kit.secrets import HANDLE_CHARS, digest, handle_of, new_secret

__all__ = ["ALL_SCOPES", "LIMIT_FIELDS", "KeyService", "Principal", "check_limits"]

ALL_SCOPES = ("balance:read", "usage:read", "usage:write", "holds:write", "pricing:read")
LAST_USED_EVERY = 60.0
# a key's own limits (docs/keys.md#per-key-limits): None / null is "none of its own"
LIMIT_FIELDS = (
    "spend_limit",
    "spend_limit_daily",
    "spend_limit_monthly",
    "tools",
    "rate_limit",
    "max_concurrency",
)
MAX_TOOLS = 200


@dataclass(frozen=True)
class Principal:
    """Who is calling the public API."""

    customer_id: str
    key_id: str | None
    scopes: frozenset[str]
    anonymous: bool = False
    # the key's own call limits (spend limits are the ledger's, read in the charge's transaction):
    # tool / route names or glob patterns it may call (None: all), its rate limit (a `limits`
    # string; None: the server's default), its cap on calls in flight (None: the default)
    tools: tuple[str, ...] | None = None
    rate_limit: str | None = None
    max_concurrency: int | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            raise Forbidden(
                f"this key lacks the {scope!r} scope", code="insufficient_scope", details={"scope": scope}
            )


@dataclass(frozen=True)
class _Cached:
    key_id: str
    digest: str
    customer_id: str
    scopes: frozenset[str]
    status: str
    customer_status: str
    expires_at: datetime | None
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    fetched: float
    tools: tuple[str, ...] | None = None
    rate_limit: str | None = None
    max_concurrency: int | None = None


def _networks(cidrs: list[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    out = []
    for c in cidrs:
        try:
            out.append(ipaddress.ip_network(c, strict=False))
        except ValueError as exc:
            raise InvalidInput(
                f"{c!r} is not an IP address or CIDR block", code="invalid_ip_allowlist"
            ) from exc
    return tuple(out)


def _check_texts(**texts: str | None) -> None:
    for label, text in texts.items():
        if text is not None:
            check_text(text, label)


def check_limits(values: dict[str, Any]) -> dict[str, Any]:
    """A key's limits as given (only those present), checked: spend limits are integers >= 0,
    ``tools`` a list of names or glob patterns, ``rate_limit`` a `limits` string ("60/minute",
    "10/second;1000/day", "off"), ``max_concurrency`` an integer >= 1. 422 ``invalid_key_limit``."""
    out: dict[str, Any] = {}
    bad = "invalid_key_limit"
    for name in ("spend_limit", "spend_limit_daily", "spend_limit_monthly"):
        if name in values:
            v = values[name]
            if v is not None and (type(v) is not int or v < 0):
                raise InvalidInput(f"{name} must be an integer >= 0 or null", code="invalid_key_limit")
            out[name] = v
    if "tools" in values:
        tools = values["tools"]
        if tools is not None:
            if not isinstance(tools, list | tuple) or len(tools) > MAX_TOOLS:
                raise InvalidInput(f"tools must be a list of at most {MAX_TOOLS} names", code=bad)
            for t in tools:
                if not isinstance(t, str) or not 0 < len(t) <= 200:
                    raise InvalidInput("each tool is a name or pattern of 1-200 characters", code=bad)
                check_text(t, "tools")
            tools = list(tools)
        out["tools"] = tools
    if "rate_limit" in values:
        rl = values["rate_limit"]
        if rl is not None:
            if not isinstance(rl, str) or len(rl) > 200:
                raise InvalidInput("rate_limit must be a string such as '60/minute'", code=bad)
            if rl.strip().lower() not in ("off", "none"):
                try:
                    parse_many(rl)
                except ValueError:
                    raise InvalidInput(
                        f"{rl!r} is not a rate limit (e.g. '60/minute', '10/second;1000/day', 'off')",
                        code="invalid_key_limit",
                    ) from None
        out["rate_limit"] = rl
    if "max_concurrency" in values:
        mc = values["max_concurrency"]
        if mc is not None and (type(mc) is not int or mc < 1):
            raise InvalidInput("max_concurrency must be an integer >= 1 or null", code="invalid_key_limit")
        out["max_concurrency"] = mc
    return out


def _public(created: dict[str, Any]) -> dict[str, Any]:
    """A key as the audit log keeps it: its view, never its plaintext."""
    return {k: v for k, v in created.items() if k not in ("key", "reused")}


def key_view(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "customer_id": row.customer_id,
        "prefix": row.prefix,
        "name": row.name,
        "note": row.note,
        "scopes": list(row.scopes or []),
        "ip_allowlist": list(row.ip_allowlist or []),
        "status": row.status,
        "expires_at": iso(row.expires_at),
        "last_used_at": iso(row.last_used_at),
        "created_at": iso(row.created_at),
        "revoked_at": iso(row.revoked_at),
        "rotated_from": row.rotated_from,
        **{f: _limit_value(row, f) for f in LIMIT_FIELDS},
    }


def _limit_value(row: Any, name: str) -> Any:
    v = getattr(row, name, None)
    return list(v) if name == "tools" and v is not None else v


class KeyService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        *,
        prefix: str = "tk_live_",
        cache_seconds: float = 5.0,
        clock: Clock | None = None,
        default_scopes: Callable[[], Sequence[str] | None] = lambda: None,
        events: EventBus | None = None,
    ) -> None:
        self.db = db
        self.events = events or EventBus()  # KeyCreated, KeyRevoked go out here
        self.default_scopes = default_scopes
        self.executor = executor
        self.prefix = prefix
        self.cache_seconds = cache_seconds
        self.clock = clock or SystemClock()
        self._cache: dict[str, _Cached] = {}
        self._used: dict[str, float] = {}
        self._refreshing: set[str] = set()
        self._generation = 0
        self._lock = threading.Lock()

    # ---- provisioning ---------------------------------------------------------------------------
    def create(
        self,
        customer_id: str,
        *,
        name: str | None = None,
        note: str | None = None,
        scopes: list[str] | None = None,
        ip_allowlist: list[str] | None = None,
        expires_at: datetime | None = None,
        force_new: bool = False,
        rotated_from: str | None = None,
        actor: Actor | None = None,
        limits: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """A new key (its plaintext in ``key``, the only time it is shown). Unless ``force_new``,
        a customer who already has an active key gets that one back (``reused``, no plaintext).
        ``actor``: who asked (a new key is audited in the same transaction, without its
        plaintext; a reused one changed nothing and is not). ``limits``: the key's own limits
        (:data:`LIMIT_FIELDS`; see :func:`check_limits`)."""
        limits = check_limits(limits or {})
        if scopes is None:  # the catalog's [keys] default_scopes, else every scope
            scopes = list(self.default_scopes() or ALL_SCOPES)
        _check_texts(name=name, note=note)
        bad = [sc for sc in scopes if sc not in ALL_SCOPES]
        if bad:
            raise InvalidInput(f"unknown scopes {bad}; known: {', '.join(ALL_SCOPES)}", code="invalid_scope")
        allow = list(ip_allowlist or [])
        _networks(allow)
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")
        return self.executor.call(
            self.create_fn(
                customer_id,
                name=name,
                note=note,
                scopes=scopes,
                allow=allow,
                expires_at=expires_at,
                force_new=force_new,
                rotated_from=rotated_from,
                actor=actor,
                limits=limits,
            )
        )

    def create_fn(
        self,
        customer_id: str,
        *,
        name: str | None = None,
        note: str | None = None,
        scopes: list[str] | None = None,
        allow: list[str] | None = None,
        expires_at: datetime | None = None,
        force_new: bool = False,
        rotated_from: str | None = None,
        actor: Actor | None = None,
        limits: dict[str, Any] | None = None,
    ) -> Command[dict[str, Any]]:
        """:meth:`create` as a unit of work to run inside another domain's (a paid checkout's
        claim mints the buyer's key in the transaction that marks it claimed). Arguments are
        checked by :meth:`create`; here scopes default to the catalog's."""
        if scopes is None:
            scopes = list(self.default_scopes() or ALL_SCOPES)
        allow = list(allow or [])
        own_limits = check_limits(limits or {})
        # a key minted with limits (an agent run's budget) is always a new key: handing back
        # the customer's existing key would silently drop them
        fresh = force_new or any(v is not None for v in own_limits.values())

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            if repo.customer_status(s, customer_id) is None:
                raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
            if not fresh:
                existing = repo.active_key_of(s, customer_id, now)
                if existing is not None:
                    return {**key_view(existing), "key": None, "reused": True}
            new = self._insert_key(
                s,
                customer_id,
                now=now,
                name=name,
                note=note,
                scopes=scopes,
                allow=allow,
                expires_at=expires_at,
                rotated_from=rotated_from,
                limits=own_limits,
            )
            if actor is not None:
                record(s, actor, "key.create", ("api_key", new["id"]), after=_public(new), at=now)
            return new

        return Command(fn, customer_id)

    def suspend_customer_keys_fn(self, customer_id: str) -> Command[list[str]]:
        """Suspend every active key of a customer (a cancelled subscription whose plan says so),
        inside the caller's unit of work. The caller calls :meth:`forget_customer` after the
        commit (else a cached key keeps working for up to ``cache_seconds``)."""

        def fn(s: Tx) -> list[str]:
            return repo.set_status_of_customer(
                s, customer_id, KeyStatus.SUSPENDED.value, only=KeyStatus.ACTIVE.value
            )

        return Command(fn, customer_id)

    def _insert_key(
        self,
        s: Tx,
        customer_id: str,
        *,
        now: datetime,
        name: str | None,
        note: str | None,
        scopes: list[str],
        allow: list[str],
        expires_at: datetime | None,
        rotated_from: str | None,
        limits: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        raw = new_secret(self.prefix)
        row = {
            "id": new_id("key"),
            "customer_id": customer_id,
            "prefix": handle_of(raw, self.prefix),
            "hash": digest(raw),
            "name": name,
            "note": note,
            "scopes": scopes,
            "ip_allowlist": allow,
            "status": KeyStatus.ACTIVE.value,
            "expires_at": expires_at,
            "last_used_at": None,
            "rotated_from": rotated_from,
            "created_at": now,
            "revoked_at": None,
            **{f: (limits or {}).get(f) for f in LIMIT_FIELDS},
        }
        repo.insert_key(s, row)
        view = key_view(SimpleNamespace(**row))
        self.events.emit(
            s,
            KeyCreated(
                customer_id,
                view["id"],
                view["prefix"],
                name,
                list(scopes),
                view["expires_at"],
                rotated_from,
            ),
        )
        return {**view, "key": raw, "reused": False}

    def _set_status(self, key_id: str, status: KeyStatus, action: str, actor: Actor | None) -> dict[str, Any]:
        def fn(s: Tx) -> dict[str, Any]:
            row = repo.get_key(s, key_id)
            if row is None:
                raise NotFound(f"key {key_id!r} not found", code="key_not_found")
            if row.status == KeyStatus.REVOKED and status != KeyStatus.REVOKED:
                raise Conflict("a revoked key stays revoked", code="key_revoked")
            now = self.clock.now()
            values: dict[str, Any] = {"status": status}
            if status == KeyStatus.REVOKED and row.revoked_at is None:
                values["revoked_at"] = now
            repo.set_key(s, key_id, **values)
            if status == KeyStatus.REVOKED and row.status != KeyStatus.REVOKED:
                self.events.emit(s, KeyRevoked(row.customer_id, key_id, row.prefix))
            if actor is not None:
                self._audit(s, actor, action, key_id, key_view(row), now)
            return {"prefix": row.prefix}

        out = self.executor.call(fn)
        self.forget(out["prefix"])
        return self.get(key_id)

    @staticmethod
    def _audit(s: Tx, actor: Actor, action: str, key_id: str, before: dict[str, Any], now: datetime) -> None:
        """Audit a change to a key (its row re-read: what was committed), unless it changed
        nothing (suspending a suspended key)."""
        after = key_view(repo.get_key(s, key_id))
        if after != before:
            record(s, actor, action, ("api_key", key_id), before=before, after=after, at=now)

    def revoke(self, key_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        return self._set_status(key_id, KeyStatus.REVOKED, "key.revoke", actor)

    def suspend(self, key_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        return self._set_status(key_id, KeyStatus.SUSPENDED, "key.suspend", actor)

    def resume(self, key_id: str, *, actor: Actor | None = None) -> dict[str, Any]:
        return self._set_status(key_id, KeyStatus.ACTIVE, "key.resume", actor)

    def rotate(
        self,
        key_id: str,
        *,
        grace_seconds: int = 0,
        expires_at: datetime | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """A new key with the same scopes, allowlist, name and note; the old one is revoked now, or
        keeps working for ``grace_seconds`` (never past its own expiry).

        The new key never inherits the old key's expiry (which may be a grace deadline, or already
        past): it has none unless ``expires_at`` is given. A key rotates once: rotating it again
        (a retried call) is 409 ``key_already_rotated`` with the replacement's id, and changes
        nothing."""
        if not 0 <= grace_seconds <= 30 * 86400:
            raise InvalidInput("grace_seconds must be between 0 and 30 days", code="invalid_grace")
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")

        def fn(s: Tx) -> dict[str, Any]:
            # the old key's row is locked (PostgreSQL; SQLite has one writer): two rotations of one
            # key are serialized, and the second sees the first's replacement
            old = repo.get_key(s, key_id, lock=True)
            if old is None:
                raise NotFound(f"key {key_id!r} not found", code="key_not_found")
            replacement = repo.replacement_of(s, key_id)
            if replacement is not None:
                raise Conflict(
                    f"key {key_id} was already rotated into {replacement}",
                    code="key_already_rotated",
                    details={"replacement_id": replacement},
                )
            if old.status != KeyStatus.ACTIVE:
                raise Conflict(f"cannot rotate a {old.status} key", code=f"key_{old.status}")
            now = self.clock.now()
            new = self._insert_key(
                s,
                old.customer_id,
                now=now,
                name=old.name,
                note=old.note,
                scopes=list(old.scopes or ALL_SCOPES),
                allow=list(old.ip_allowlist or []),
                expires_at=expires_at,
                rotated_from=key_id,
                # the new key has the old one's limits; its spend counts from zero (per key)
                limits={f: _limit_value(old, f) for f in LIMIT_FIELDS},
            )
            if grace_seconds:
                until = now + timedelta(seconds=grace_seconds)
                if old.expires_at is not None:  # a grace never extends a key's life
                    until = min(until, old.expires_at)
                repo.set_key(s, key_id, expires_at=until)
            else:
                repo.set_key(s, key_id, status=KeyStatus.REVOKED, revoked_at=now)
                self.events.emit(s, KeyRevoked(old.customer_id, key_id, old.prefix))
            if actor is not None:
                # before: the old key; after: the new one (never its plaintext) and what became
                # of the old one (revoked, or its grace deadline)
                after = {**_public(new), "old_key": key_view(repo.get_key(s, key_id))}
                record(s, actor, "key.rotate", ("api_key", key_id), before=key_view(old), after=after, at=now)
            return {**new, "_old_prefix": old.prefix}

        out = self.executor.call(fn)
        self.forget(out.pop("_old_prefix"))
        return out

    def update(self, key_id: str, *, actor: Actor | None = None, **fields: Any) -> dict[str, Any]:
        values = {
            k: v for k, v in fields.items() if k in {"name", "note", "scopes", "ip_allowlist", "expires_at"}
        }
        values.update(check_limits({k: v for k, v in fields.items() if k in LIMIT_FIELDS}))
        if "scopes" in values and values["scopes"] is None:
            values["scopes"] = list(ALL_SCOPES)  # null: back to every scope
        if "ip_allowlist" in values and values["ip_allowlist"] is None:
            values["ip_allowlist"] = []  # null: no address restriction
        if values.get("expires_at") is not None and values["expires_at"].tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")
        _check_texts(name=values.get("name"), note=values.get("note"))
        if "scopes" in values:
            bad = [sc for sc in values["scopes"] if sc not in ALL_SCOPES]
            if bad:
                raise InvalidInput(f"unknown scopes {bad}", code="invalid_scope")
        if "ip_allowlist" in values:
            _networks(values["ip_allowlist"])

        def fn(s: Tx) -> str:
            row = repo.get_key(s, key_id)
            if row is None:
                raise NotFound(f"key {key_id!r} not found", code="key_not_found")
            if values:
                repo.set_key(s, key_id, **values)
            if actor is not None:
                self._audit(s, actor, "key.update", key_id, key_view(row), self.clock.now())
            return str(row.prefix)

        self.forget(self.executor.call(fn))
        return self.get(key_id)

    # ---- reads --------------------------------------------------------------------------------
    @staticmethod
    def spend_limits_in(s: Tx, key_id: str) -> tuple[int | None, int | None, int | None] | None:
        """A key's (total, daily, monthly) spend limits read in the caller's unit of work (the
        ledger's charge: the runtime wires it as the ledger's ``key_limits``); None: not a key."""
        return repo.spend_limits(s, key_id)

    def get(self, key_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            row = repo.get_key(s, key_id)
        if row is None:
            raise NotFound(f"key {key_id!r} not found", code="key_not_found")
        return key_view(row)

    def list(self, *, customer_id: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        with self.db.scope(write=False) as s:
            return [key_view(r) for r in repo.list_keys(s, customer_id=customer_id, status=status)]

    # ---- authentication ---------------------------------------------------------------------------
    def forget(self, prefix: str) -> None:
        """Drop a key from this process's cache. A read that started before (a background
        refresh) will not put its stale record back: the generation moved on."""
        with self._lock:
            self._cache.pop(prefix, None)
            self._generation += 1

    def forget_customer(self, customer_id: str) -> None:
        with self._lock:
            for handle in [h for h, rec in self._cache.items() if rec.customer_id == customer_id]:
                del self._cache[handle]
            self._generation += 1

    def customer_status_changed(self, event: CustomerStatusChanged) -> None:
        """Subscriber (wired by the runtime): a customer's status moved, so the cached records
        of their keys, which carry the old status, go."""
        self.forget_customer(event.customer_id)

    def _load(self, handle: str) -> _Cached | None:
        with self.db.scope(write=False) as s:
            row = repo.key_for_auth(s, handle)
        if row is None:
            return None
        return _Cached(
            row.id,
            row.hash,
            row.customer_id,
            frozenset(row.scopes or ()),
            row.status,
            row.customer_status,
            row.expires_at,
            _networks(list(row.ip_allowlist or [])),
            time.monotonic(),
            None if row.tools is None else tuple(row.tools),
            row.rate_limit,
            row.max_concurrency,
        )

    def cached(self, raw: str) -> _Cached | None:
        """The cached, still fresh record for a key, or None when it must be read."""
        handle = handle_of(raw, self.prefix)
        with self._lock:
            hit = self._cache.get(handle)
        if hit is None or time.monotonic() - hit.fetched > self.cache_seconds:
            return None
        return hit

    def refresh_due(self, rec: _Cached) -> bool:
        """True (once) when a cached record is past half its life: the caller refreshes it in
        the background so busy keys never expire under load and stall on a database read."""
        if time.monotonic() - rec.fetched < self.cache_seconds / 2:
            return False
        with self._lock:
            if rec.key_id in self._refreshing:
                return False
            self._refreshing.add(rec.key_id)
        return True

    def refresh(self, raw: str, key_id: str) -> None:
        try:
            self.lookup(raw)
        finally:
            with self._lock:
                self._refreshing.discard(key_id)

    def lookup(self, raw: str) -> _Cached | None:
        handle = handle_of(raw, self.prefix)
        with self._lock:
            generation = self._generation
        rec = self._load(handle)
        self._store(handle, rec, generation)
        return rec

    def _store(self, handle: str, rec: _Cached | None, generation: int) -> None:
        """Cache a record read at ``generation``, unless a key was revoked or changed since."""
        if rec is None or self.cache_seconds <= 0:
            return
        with self._lock:
            if generation != self._generation:
                return
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[handle] = rec

    def check(self, raw: str, rec: _Cached | None, client_ip: str | None) -> Principal:
        """Turn a looked-up record into a Principal, or raise 401/403. Constant-time comparison."""
        if rec is None or not hmac.compare_digest(rec.digest, digest(raw)):
            raise AuthError("invalid API key", code="invalid_api_key")
        if rec.status == KeyStatus.REVOKED:
            raise AuthError("this API key was revoked", code="key_revoked")
        if rec.status != KeyStatus.ACTIVE:
            raise AuthError("this API key is suspended", code="key_suspended")
        if rec.expires_at is not None and rec.expires_at <= self.clock.now():
            raise AuthError("this API key has expired", code="key_expired")
        if rec.customer_status != "active":
            raise Forbidden(f"the customer is {rec.customer_status}", code="customer_inactive")
        if rec.networks:
            try:
                ip = ipaddress.ip_address(client_ip or "")
            except ValueError:
                ip = None
            if ip is None or not any(ip in n for n in rec.networks):
                raise Forbidden("this address is not in the key's IP allowlist", code="ip_not_allowed")
        self._touch(rec.key_id)
        return Principal(
            rec.customer_id,
            rec.key_id,
            rec.scopes,
            tools=rec.tools,
            rate_limit=rec.rate_limit,
            max_concurrency=rec.max_concurrency,
        )

    def well_formed(self, raw: str) -> bool:
        return raw.startswith(self.prefix) and len(raw) >= len(self.prefix) + HANDLE_CHARS and len(raw) <= 256

    def authenticate(self, raw: str, client_ip: str | None = None) -> Principal:
        if not self.well_formed(raw):
            raise AuthError("invalid API key", code="invalid_api_key")
        rec = self.cached(raw) or self.lookup(raw)
        return self.check(raw, rec, client_ip)

    def _touch(self, key_id: str) -> None:
        """Record last use, at most once a minute per key and process, off the request path."""
        now_m = time.monotonic()
        with self._lock:
            last = self._used.get(key_id)
            if last is not None and now_m - last < LAST_USED_EVERY:
                return
            self._used[key_id] = now_m
        when = self.clock.now()

        def fn(s: Tx) -> None:
            repo.set_key(s, key_id, last_used_at=when)

        with suppress(RuntimeError):  # shutting down
            self.executor.submit(fn)
