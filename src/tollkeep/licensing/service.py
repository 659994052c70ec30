"""Licences: issue (sign), validate online, activate / deactivate / check in machines, revoke,
re-issue with new terms, recover by email, rotate the signing key.

Keys are compact JWS (JWT) signed with EdDSA over Ed25519 (``cryptography``); ``verify.py``
checks them offline. Activation counts a licence's active machines with the licence row locked
(PostgreSQL ``FOR UPDATE``; SQLite has one writer), so ``max_machines`` holds under any
concurrency. A machine that has not checked in for the licence's ``grace`` is stale: its seat
is freed for a new machine that needs it.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import bindparam, func, select

from tollkeep.audit import record
from tollkeep.catalog import Catalog, Plan
from tollkeep.customers.models import Customer
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Conflict, InvalidInput, NotFound, TollkeepError
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import Command, WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.models import table_of
from tollkeep.kit.rawsql import RawStatement
from tollkeep.licensing import repository as repo
from tollkeep.licensing.events import (
    LicenseCreated,
    LicenseRecoveryRequested,
    LicenseRevoked,
    LicenseUpdated,
)
from tollkeep.licensing.models import License, LicenseMachine, LicenseSigningKey
from tollkeep.licensing.tokens import sign
from tollkeep.licensing.verify import LicenseInvalid, b64url_encode, decode_unverified, keys_from_jwks, verify

__all__ = ["UNSET", "LicenseService", "fingerprint_hash"]

L = table_of(License)
M = table_of(LicenseMachine)
K = table_of(LicenseSigningKey)
CU = table_of(Customer)
ISSUER = "tollkeep"
UNSET: Any = object()
MAX_FINGERPRINT = 512
# The online validation's reads, built once and run on the driver cursor (kit/rawsql.py: the same
# statements and type processors, without SQLAlchemy's per-execution bookkeeping, which was most
# of a validation's time; ``TOLLKEEP_RAW_SQL=0`` runs them through Session.execute)
_LICENSE = RawStatement(select(L).where(L.c.id == bindparam("lid")))
_ACTIVE_MACHINES = RawStatement(
    select(func.count().label("n"))
    .select_from(M)
    .where(M.c.license_id == bindparam("lid"), M.c.status == "active")
)
_MACHINE = RawStatement(
    select(M).where(M.c.license_id == bindparam("lid"), M.c.fingerprint_hash == bindparam("fp"))
)


def _public(out: dict[str, Any]) -> dict[str, Any]:
    """A licence as the audit log keeps it: its view without the key."""
    return {k: v for k, v in out.items() if k != "key"}


def fingerprint_hash(fingerprint: str) -> str:
    if not isinstance(fingerprint, str) or not fingerprint.strip() or len(fingerprint) > MAX_FINGERPRINT:
        raise InvalidInput(
            f"fingerprint must be 1 to {MAX_FINGERPRINT} characters", code="invalid_fingerprint"
        )
    return hashlib.sha256(fingerprint.strip().encode()).hexdigest()


class LicenseError(TollkeepError):
    """A key that is not a valid licence where one is required (activate, check in)."""

    status = 403


class LicenseService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock,
        events: EventBus,
        passphrase: Callable[[], str | None] = lambda: None,
        default_grace_seconds: int = 7 * 86_400,
    ) -> None:
        self.db = db
        self.executor = executor
        self.catalog = catalog
        self.clock = clock
        self.events = events
        self._passphrase = passphrase
        self.default_grace_seconds = default_grace_seconds
        self._public: dict[str, Ed25519PublicKey] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ signing keys
    def _pem(self, key: Ed25519PrivateKey) -> tuple[str, bool]:
        secret = self._passphrase()
        algo: serialization.KeySerializationEncryption = (
            serialization.BestAvailableEncryption(secret.encode()) if secret else serialization.NoEncryption()
        )
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, algo)
        return pem.decode(), bool(secret)

    def _load_private(self, row: Any) -> Ed25519PrivateKey:
        secret = self._passphrase()
        if row.encrypted and not secret:
            raise TollkeepError(
                "the licence signing key is encrypted: set TOLLKEEP_LICENSE_KEY_PASSPHRASE",
                code="license_key_locked",
                status=503,
            )
        key = serialization.load_pem_private_key(
            row.private_pem.encode(), password=secret.encode() if row.encrypted and secret else None
        )
        if not isinstance(key, Ed25519PrivateKey):
            raise TollkeepError(
                "the licence signing key is not Ed25519", code="license_key_invalid", status=500
            )
        return key

    def _insert_key(self, s: Tx, now: datetime) -> Any:
        private = Ed25519PrivateKey.generate()
        raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        pem, encrypted = self._pem(private)
        kid = new_id("lk_")
        repo.insert_signing_key(
            s, kid=kid, public_x=b64url_encode(raw), private_pem=pem, encrypted=encrypted, created_at=now
        )
        return s.execute(select(K).where(K.c.kid == kid)).one()

    def _signing_row(self, s: Tx) -> Any:
        """The active signing key, made on first use."""
        row = s.execute(
            select(K).where(K.c.retired_at.is_(None)).order_by(K.c.created_at.desc(), K.c.kid.desc()).limit(1)
        ).first()
        return row if row is not None else self._insert_key(s, self.clock.now())

    def rotate_key(self, *, actor: Actor | None = None) -> dict[str, Any]:
        """Retire the signing key; a new one signs from now on. Old keys stay in the JWKS, so
        every licence already issued keeps verifying. ``actor``: who asked (audited in the same
        transaction, as every admin change here)."""

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            repo.retire_signing_keys(s, now)
            row = self._insert_key(s, now)
            out = {"kid": row.kid, "created_at": iso(row.created_at)}
            if actor is not None:
                record(s, actor, "license.rotate_key", ("license_key", row.kid), after=out, at=now)
            return out

        return self.executor.call(fn)

    def jwks(self) -> dict[str, Any]:
        """Every public key, newest first (retired ones kept for the licences they signed)."""
        with self.db.scope(write=False) as s:
            rows = s.execute(select(K).order_by(K.c.created_at.desc(), K.c.kid.desc())).all()
        if not rows:
            self.executor.call(self._signing_row)
            return self.jwks()
        return {
            "keys": [
                {"kty": "OKP", "crv": "Ed25519", "x": r.public_x, "kid": r.kid, "alg": "EdDSA", "use": "sig"}
                for r in rows
            ]
        }

    def public_keys(self) -> dict[str, Ed25519PublicKey]:
        with self._lock:
            known = dict(self._public)
        if not known:
            known = self._reload_public()
        return known

    def _reload_public(self) -> dict[str, Ed25519PublicKey]:
        keys = keys_from_jwks(self.jwks())
        with self._lock:
            self._public = keys
        return keys

    # ------------------------------------------------------------------ signing
    def _sign(self, s: Tx, lic: Any) -> str:
        row = self._signing_row(s)
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "lid": lic.id,
            "sub": lic.customer_id,
            "plan": lic.plan,
            "entitlements": list(lic.entitlements or []),
            "max_machines": lic.max_machines,
            "iat": int(self.clock.now().timestamp()),
            "grace": lic.grace_seconds,
            "ver": lic.key_version,
        }
        if lic.expires_at is not None:
            claims["exp"] = int(lic.expires_at.timestamp())
        return sign(claims, self._load_private(row), row.kid)

    # ------------------------------------------------------------------ issue and manage
    def _plan(self, key: str) -> Any:
        plan = self.catalog().plans.get(key)
        if plan is None:
            raise InvalidInput(f"no plan {key!r} in the catalog", code="unknown_plan")
        return plan

    def issue(
        self,
        customer_id: str,
        plan: str,
        *,
        max_machines: int | None = UNSET,
        expires_at: datetime | None = None,
        grace_seconds: int | None = None,
        note: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """A new licence for a customer on a plan (entitlements: the plan's features;
        ``max_machines`` unset: the plan's; None: unlimited). Returns its id and key."""
        issue = partial(
            self.issue_in,
            customer_id=customer_id,
            plan=plan,
            max_machines=max_machines,
            expires_at=expires_at,
            grace_seconds=grace_seconds,
            note=note,
        )

        def fn(s: Tx) -> dict[str, Any]:
            out = issue(s)
            if actor is not None:
                record(
                    s,
                    actor,
                    "license.create",
                    ("license", out["id"]),
                    after=_public(out),
                    at=self.clock.now(),
                )
            return out

        return self.executor.call(Command(fn, customer_id))

    def issue_in(
        self,
        s: Tx,
        *,
        customer_id: str,
        plan: str,
        max_machines: int | None = UNSET,
        expires_at: datetime | None = None,
        grace_seconds: int | None = None,
        note: str | None = None,
        license_id: str | None = None,
    ) -> dict[str, Any]:
        """:meth:`issue` inside the caller's unit of work (a free-licence code is spent in the
        same transaction): an invalid plan or a signing failure rolls the caller back too."""
        p = self._plan(plan)
        machines = p.max_machines if max_machines is UNSET else max_machines
        if machines is not None and machines < 1:
            raise InvalidInput(
                "max_machines must be at least 1 (or null: unlimited)", code="invalid_max_machines"
            )
        now = self.clock.now()
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")
        grace = self.default_grace_seconds if grace_seconds is None else grace_seconds
        if grace < 0:
            raise InvalidInput("grace_seconds must not be negative", code="invalid_grace")
        if s.execute(select(CU.c.id).where(CU.c.id == customer_id)).first() is None:
            raise NotFound(f"no customer {customer_id}", code="customer_not_found")
        lid = license_id or new_id("lic")
        repo.insert_license(
            s,
            id=lid,
            customer_id=customer_id,
            plan=p.key,
            entitlements=list(p.features),
            max_machines=machines,
            expires_at=expires_at,
            grace_seconds=grace,
            status="active",
            key_version=1,
            note=note,
            created_at=now,
            updated_at=now,
        )
        lic = self._row(s, lid)
        key = self._sign(s, lic)
        self.events.emit(s, LicenseCreated(lid, customer_id, p.key))
        return {**self.view(s, lic), "key": key}

    # ------------------------------------------------------------------ licences of subscriptions
    def follow_subscription(
        self,
        s: Tx,
        *,
        subscription_id: str,
        customer_id: str,
        plan: Plan | None,
        live: bool,
        until: datetime,
        now: datetime,
    ) -> str | None:
        """Bring the licence of a subscription to the subscription's state, inside the
        subscription's own unit of work (so a crash can never leave them apart). Idempotent:
        called again with the same state it writes nothing; the licence is keyed by
        ``subscription_id`` (unique), so a subscription never gets two.

        - live (trialing, active, past due) on a plan with ``license = true``: the licence exists
          (issued the first time), has the plan's terms and expires at ``until`` (the period end
          + the plan's grace). A renewal moves ``exp``, a plan change the terms; same id.
        - otherwise (lapsed, canceled, or moved to a plan without a licence): the licence
          expires now (an expiry already past stays). Not revoked: a renewal or reactivation
          of the same subscription extends the same licence again.

        Nothing is signed here: the re-issued key (``ver`` + 1) is handed to the app at its next
        online validation or check-in, so a locked signing key never blocks billing. Returns the
        licence id (None: none is due)."""
        lic = s.execute(select(L).where(L.c.subscription_id == subscription_id).with_for_update()).first()
        wanted = live and plan is not None and plan.license
        if lic is None:
            if not wanted:
                return None
            assert plan is not None
            lid = new_id("lic")
            repo.insert_license(
                s,
                id=lid,
                customer_id=customer_id,
                plan=plan.key,
                entitlements=list(plan.features),
                max_machines=plan.max_machines,
                expires_at=until,
                grace_seconds=self.default_grace_seconds,
                status="active",
                key_version=1,
                note=f"subscription {subscription_id}",
                subscription_id=subscription_id,
                created_at=now,
                updated_at=now,
            )
            self.events.emit(s, LicenseCreated(lid, customer_id, plan.key))
            return lid
        if lic.status == "revoked":  # an operator's revocation is final
            return str(lic.id)
        terms: dict[str, Any]
        if wanted:
            assert plan is not None
            terms = {"plan": plan.key, "entitlements": list(plan.features), "expires_at": until}
            if plan.key != lic.plan:
                terms["max_machines"] = plan.max_machines
        else:
            ends = lic.expires_at if lic.expires_at is not None and lic.expires_at <= now else now
            terms = {"expires_at": ends}
        changed = {k: v for k, v in terms.items() if getattr(lic, k) != v}
        if changed:
            repo.update_license(s, lic.id, key_version=lic.key_version + 1, updated_at=now, **changed)
            self.events.emit(
                s,
                LicenseUpdated(
                    lic.id, lic.customer_id, terms.get("plan", lic.plan), lic.key_version + 1, sorted(changed)
                ),
            )
        return str(lic.id)

    def of_subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """The licence of a subscription with its current key (signed now; None when the
        signing key cannot be used: the app gets it at its first online validation), or None."""

        def fn(s: Tx) -> dict[str, Any] | None:
            lic = s.execute(select(L).where(L.c.subscription_id == subscription_id)).first()
            if lic is None:
                return None
            try:
                key: str | None = self._sign(s, lic)
            except TollkeepError:  # e.g. license_key_locked: the licence exists, the key comes later
                key = None
            return {**self.view(s, lic), "key": key}

        return self.executor.call(fn)

    def _row(self, s: Tx, lid: str, *, lock: bool = False) -> Any:
        q = select(L).where(L.c.id == lid)
        row = s.execute(q.with_for_update() if lock else q).first()
        if row is None:
            raise NotFound(f"no licence {lid}", code="license_not_found")
        return row

    def view(self, s: Tx, lic: Any) -> dict[str, Any]:
        now = self.clock.now()
        active = _ACTIVE_MACHINES.first(s, {"lid": lic.id}).n
        return {
            "id": lic.id,
            "customer_id": lic.customer_id,
            "plan": lic.plan,
            "entitlements": list(lic.entitlements or []),
            "max_machines": lic.max_machines,
            "machines_active": active,
            "expires_at": iso(lic.expires_at) if lic.expires_at else None,
            "expired": lic.expires_at is not None and lic.expires_at <= now,
            "grace_seconds": lic.grace_seconds,
            "status": lic.status,
            "key_version": lic.key_version,
            "note": lic.note,
            "subscription_id": lic.subscription_id,
            "created_at": iso(lic.created_at),
            "updated_at": iso(lic.updated_at),
            "revoked_at": iso(lic.revoked_at) if lic.revoked_at else None,
        }

    def get(self, lid: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            lic = self._row(s, lid)
            out = self.view(s, lic)
            out["machines"] = [
                self._machine_view(m)
                for m in s.execute(select(M).where(M.c.license_id == lid).order_by(M.c.activated_at)).all()
            ]
            return out

    def list(
        self, *, customer_id: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        q = select(L).order_by(L.c.id.desc()).limit(max(1, min(limit, 500)))
        if customer_id:
            q = q.where(L.c.customer_id == customer_id)
        if status:
            q = q.where(L.c.status == status)
        with self.db.scope(write=False) as s:
            return [self.view(s, r) for r in s.execute(q).all()]

    def update(
        self,
        lid: str,
        *,
        plan: str | None = None,
        max_machines: int | None = UNSET,
        expires_at: datetime | None = UNSET,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """New terms on the same licence id; the key is re-issued with ``ver`` + 1 (returned here,
        and handed to the app at its next online validation)."""
        p = self._plan(plan) if plan is not None else None
        if max_machines is not UNSET and max_machines is not None and max_machines < 1:
            raise InvalidInput(
                "max_machines must be at least 1 (or null: unlimited)", code="invalid_max_machines"
            )
        if expires_at not in (UNSET, None) and expires_at.tzinfo is None:
            raise InvalidInput("expires_at needs a timezone", code="invalid_timestamp")

        def fn(s: Tx) -> dict[str, Any]:
            lic = self._row(s, lid, lock=True)
            if lic.status == "revoked":
                raise Conflict("a revoked licence cannot change", code="license_revoked")
            before = self.view(s, lic) if actor is not None else None
            values: dict[str, Any] = {"key_version": lic.key_version + 1, "updated_at": self.clock.now()}
            if p is not None:
                values.update(plan=p.key, entitlements=list(p.features))
            if max_machines is not UNSET:
                values["max_machines"] = max_machines
            if expires_at is not UNSET:
                values["expires_at"] = expires_at
            repo.update_license(s, lid, **values)
            lic = self._row(s, lid)
            moved = sorted(k for k in values if k not in ("key_version", "updated_at"))
            self.events.emit(s, LicenseUpdated(lid, lic.customer_id, lic.plan, lic.key_version, moved))
            view = self.view(s, lic)
            if actor is not None:
                record(
                    s,
                    actor,
                    "license.update",
                    ("license", lid),
                    before=before,
                    after=view,
                    at=values["updated_at"],
                )
            return {**view, "key": self._sign(s, lic)}

        return self.executor.call(Command(fn, self._owner(lid)))

    def _owner(self, lid: str) -> str | None:
        with self.db.scope(write=False) as s:
            row = s.execute(select(L.c.customer_id).where(L.c.id == lid)).first()
        return None if row is None else row.customer_id

    def revoke(self, lid: str, *, actor: Actor | None = None) -> dict[str, Any]:
        def fn(s: Tx) -> dict[str, Any]:
            lic = self._row(s, lid, lock=True)
            if lic.status != "revoked":
                now = self.clock.now()
                before = self.view(s, lic)
                repo.update_license(s, lid, status="revoked", revoked_at=now, updated_at=now)
                self.events.emit(s, LicenseRevoked(lid, lic.customer_id))
                if actor is not None:
                    after = self.view(s, self._row(s, lid))
                    record(s, actor, "license.revoke", ("license", lid), before=before, after=after, at=now)
            return self.view(s, self._row(s, lid))

        return self.executor.call(Command(fn, self._owner(lid)))

    def revoked(self) -> dict[str, Any]:
        """The revocation list: ids of revoked licences (an app that is online checks its own)."""
        with self.db.scope(write=False) as s:
            rows = s.execute(
                select(L.c.id, L.c.revoked_at).where(L.c.status == "revoked").order_by(L.c.id)
            ).all()
        return {
            "data": [{"id": r.id, "revoked_at": iso(r.revoked_at) if r.revoked_at else None} for r in rows]
        }

    # ------------------------------------------------------------------ the app's calls
    def _verified(self, token: str) -> Any:
        """Verify offline against our keys (reloading them once for an unknown kid)."""
        try:
            return verify(token, self.public_keys(), now=self.clock.now().timestamp())
        except LicenseInvalid as exc:
            if exc.code != "unknown_key":
                raise
            return verify(token, self._reload_public(), now=self.clock.now().timestamp())

    def _verified_online(self, token: str) -> Any:
        """:meth:`_verified`, except that an expired key whose licence has since been extended
        (a subscription renewed while the app was offline: ``ver`` moved on, the licence is
        active and not expired) is accepted online: the licence's current state is the truth
        there, and the app gets the re-issued key back. Its signature is still checked."""
        try:
            return self._verified(token)
        except LicenseInvalid as exc:
            if exc.code != "expired":
                raise
            _, raw = decode_unverified(token)
            claims = verify(token, self.public_keys(), now=float(raw["exp"]))  # signature only
            with self.db.scope(write=False) as s:
                lic = s.execute(select(L).where(L.c.id == claims.lid)).first()
            renewed = (
                lic is not None
                and lic.status == "active"
                and lic.key_version > claims.ver
                and (lic.expires_at is None or lic.expires_at > self.clock.now())
            )
            if not renewed:
                raise
            return claims

    def validate(self, token: str, fingerprint: str | None = None) -> dict[str, Any]:
        """The online check: signature, then the licence's current state. ``valid`` is false
        with a ``code`` saying why; a key signed with older terms gets the re-issued one back
        (even an expired one, when its licence was extended since: a renewal)."""
        fp = fingerprint_hash(fingerprint) if fingerprint is not None else None
        try:
            claims = self._verified_online(token)
        except LicenseInvalid as exc:
            code = "expired" if exc.code == "expired" else exc.code
            out: dict[str, Any] = {"valid": False, "code": code, "message": exc.message}
            if code == "expired":  # still say which licence it was
                _, raw = decode_unverified(token)
                out["license_id"] = raw.get("lid")
            return out
        with self.db.scope(write=False) as s:
            lic = _LICENSE.first(s, {"lid": claims.lid})
            if lic is None:
                return {"valid": False, "code": "not_found", "message": "no such licence"}
            view = self.view(s, lic)
            machine = None
            if fp is not None:
                m = _MACHINE.first(s, {"lid": lic.id, "fp": fp})
                machine = {"activated": m is not None and m.status == "active"}
        if lic.status == "revoked":
            return {"valid": False, "code": "revoked", "message": "the licence was revoked", "license": view}
        if view["expired"]:
            return {"valid": False, "code": "expired", "message": "the licence has expired", "license": view}
        out = {
            "valid": True,
            "code": "valid",
            "license": view,
            "entitlements": view["entitlements"],
        }
        if machine is not None:
            out["machine"] = machine
        if claims.ver < lic.key_version:
            out["key"] = self.executor.call(lambda s: self._sign(s, self._row(s, lic.id)))
            out["key_updated"] = True
        return out

    def _usable(self, token: str) -> Any:
        try:
            claims = self._verified_online(token)
        except LicenseInvalid as exc:
            raise LicenseError(exc.message, code=f"license_{exc.code}") from None
        return claims

    def _machine_view(self, m: Any) -> dict[str, Any]:
        return {
            "id": m.id,
            "name": m.name,
            "status": m.status,
            "activated_at": iso(m.activated_at),
            "last_seen_at": iso(m.last_seen_at),
            "deactivated_at": iso(m.deactivated_at) if m.deactivated_at else None,
        }

    def _live(self, s: Tx, lic: Any) -> Any:
        if lic.status == "revoked":
            raise LicenseError("the licence was revoked", code="license_revoked")
        if lic.expires_at is not None and lic.expires_at <= self.clock.now():
            raise LicenseError("the licence has expired", code="license_expired")
        return lic

    def activate(
        self, token: str, fingerprint: str, *, name: str | None = None
    ) -> tuple[bool, dict[str, Any]]:
        """Activate a machine: ``(created, view)``; an already active machine is not a new
        seat (created False). Beyond ``max_machines``: 409 ``max_machines_reached`` (a stale
        machine's seat, one silent for longer than the grace, is freed first)."""
        fp = fingerprint_hash(fingerprint)
        if name is not None and len(name) > 255:
            raise InvalidInput("name is at most 255 characters", code="invalid_name")
        claims = self._usable(token)

        def fn(s: Tx) -> tuple[bool, dict[str, Any]]:
            lic = self._live(s, self._row(s, claims.lid, lock=True))
            now = self.clock.now()
            m = s.execute(select(M).where(M.c.license_id == lic.id, M.c.fingerprint_hash == fp)).first()
            if m is not None and m.status == "active":
                repo.update_machines(s, [m.id], last_seen_at=now, name=name or m.name)
                return False, self._activation(s, lic, m.id)
            if lic.max_machines is not None:
                active = s.execute(
                    select(M.c.id, M.c.last_seen_at)
                    .where(M.c.license_id == lic.id, M.c.status == "active")
                    .order_by(M.c.last_seen_at)
                ).all()
                if len(active) >= lic.max_machines:
                    stale = [
                        r.id for r in active if r.last_seen_at + timedelta(seconds=lic.grace_seconds) < now
                    ]
                    free = len(active) - lic.max_machines + 1
                    if len(stale) < free:
                        raise Conflict(
                            f"this licence is active on {len(active)} of {lic.max_machines} machines: "
                            "deactivate one first",
                            code="max_machines_reached",
                            details={"max_machines": lic.max_machines, "machines_active": len(active)},
                        )
                    repo.update_machines(s, stale[:free], status="deactivated", deactivated_at=now)
            if m is not None:
                repo.update_machines(
                    s,
                    [m.id],
                    status="active",
                    activated_at=now,
                    last_seen_at=now,
                    deactivated_at=None,
                    name=name,
                )
                mid = m.id
            else:
                mid = new_id("mch_")
                repo.insert_machine(
                    s,
                    id=mid,
                    license_id=lic.id,
                    fingerprint_hash=fp,
                    name=name,
                    status="active",
                    activated_at=now,
                    last_seen_at=now,
                )
            return True, self._activation(s, lic, mid)

        return self.executor.call(Command(fn, claims.sub))

    def _activation(self, s: Tx, lic: Any, mid: str) -> dict[str, Any]:
        m = s.execute(select(M).where(M.c.id == mid)).one()
        out = self._machine_view(m)
        out["license"] = self.view(s, lic)
        out["checkin_before"] = iso(m.last_seen_at + timedelta(seconds=lic.grace_seconds))
        return out

    def _active_machine(self, s: Tx, lic: Any, fp: str) -> Any:
        m = s.execute(select(M).where(M.c.license_id == lic.id, M.c.fingerprint_hash == fp)).first()
        if m is None or m.status != "active":
            raise NotFound("this machine is not activated on the licence", code="machine_not_activated")
        return m

    def deactivate(self, token: str, fingerprint: str) -> dict[str, Any]:
        fp = fingerprint_hash(fingerprint)
        claims = self._usable(token)

        def fn(s: Tx) -> dict[str, Any]:
            lic = self._row(s, claims.lid, lock=True)
            m = self._active_machine(s, lic, fp)
            repo.update_machines(s, [m.id], status="deactivated", deactivated_at=self.clock.now())
            return self._activation(s, lic, m.id)

        return self.executor.call(Command(fn, claims.sub))

    def checkin(self, token: str, fingerprint: str) -> dict[str, Any]:
        """The heartbeat of an activated machine: it keeps its seat for ``grace`` more seconds."""
        fp = fingerprint_hash(fingerprint)
        claims = self._usable(token)

        def fn(s: Tx) -> dict[str, Any]:
            lic = self._live(s, self._row(s, claims.lid))
            m = self._active_machine(s, lic, fp)
            repo.update_machines(s, [m.id], last_seen_at=self.clock.now())
            out = self._activation(s, lic, m.id)
            if claims.ver < lic.key_version:
                out["key"] = self._sign(s, lic)
            return out

        return self.executor.call(Command(fn, claims.sub))

    def recover(self, email: str) -> None:
        """Re-issue the keys (same licence ids) of every active licence of the customers with
        this email, and hand them to the seller's webhook endpoints to send
        (``license.recovery_requested``). Nothing is said to the caller about what exists."""
        email = email.strip()
        if not email or len(email) > 320 or "@" not in email:
            raise InvalidInput("a valid email address is required", code="invalid_email")

        def fn(s: Tx) -> None:
            customers = (
                s.execute(select(CU.c.id).where(func.lower(CU.c.email) == email.lower())).scalars().all()
            )
            for cid in customers:
                rows = s.execute(
                    select(L).where(L.c.customer_id == cid, L.c.status == "active").order_by(L.c.id)
                ).all()
                found = [{"license_id": r.id, "key": self._sign(s, r)} for r in rows]
                if found:
                    self.events.emit(s, LicenseRecoveryRequested(email, cid, found))

        self.executor.call(fn)
