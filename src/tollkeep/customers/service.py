"""Customers (and their wallets), including anonymous install ids with a small free allowance."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import IntegrityError

from tollkeep.audit import record
from tollkeep.catalog import Catalog
from tollkeep.customers import queries
from tollkeep.customers import repository as repo
from tollkeep.customers.events import CustomerCreated, CustomerStatusChanged
from tollkeep.customers.queries import customer_view
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import Clock, SystemClock
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import AuthError, Conflict, InvalidInput, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import Command, WriteExecutor
from tollkeep.kit.ids import new_id
from tollkeep.kit.jsonsafe import check_json, check_text
from tollkeep.ledger import LedgerService, open_wallet
from tollkeep.plans import PlanService

__all__ = ["CustomerService"]

STATUSES = ("active", "suspended", "closed")
INSTALL_PREFIX = "install:"  # reserved: the external ids of anonymous install-id customers
_INSTALL_RE = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_EMAIL_RE = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,255}$")


class CustomerService:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        ledger: LedgerService,
        plans: PlanService,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock | None = None,
        events: EventBus | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.ledger = ledger
        self.plans = plans
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.events = events or EventBus()  # CustomerCreated, CustomerStatusChanged go out here

    # ---- writes -------------------------------------------------------------------------------
    def create(
        self,
        external_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        plan: str | None = None,
        anonymous: bool = False,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        """Create a customer with its wallet (and plan, and anonymous allowance). ``actor``: who
        asked (an admin action is audited in the same transaction)."""
        return self.executor.call(
            self.create_fn(
                external_id,
                email=email,
                name=name,
                metadata=metadata,
                plan=plan,
                anonymous=anonymous,
                actor=actor,
            )
        )

    def create_fn(
        self,
        external_id: str,
        *,
        email: str | None = None,
        name: str | None = None,
        metadata: dict[str, Any] | None = None,
        plan: str | None = None,
        anonymous: bool = False,
        actor: Actor | None = None,
    ) -> Command[dict[str, Any]]:
        """:meth:`create` as a unit of work another domain runs inside its own (a buyer whose
        payment settles becomes a customer in the payment's transaction). Raises Conflict
        (``customer_exists``, with ``customer_id``) when the external id is taken."""
        external_id = (external_id or "").strip()
        if not 1 <= len(external_id) <= 255:
            raise InvalidInput("external_id is required (1-255 characters)", code="invalid_external_id")
        if not anonymous and external_id.lower().startswith(INSTALL_PREFIX):
            raise InvalidInput(
                f"external ids starting with {INSTALL_PREFIX!r} are reserved for anonymous install ids",
                code="reserved_external_id",
            )
        if email is not None and not _EMAIL_RE.match(email):
            raise InvalidInput("email is not a valid address", code="invalid_email")
        check_json(metadata or {}, "metadata")
        for label, text in (("external_id", external_id), ("email", email), ("name", name)):
            if text is not None:
                check_text(text, label)
        cat = self.catalog()
        plan = plan if plan is not None else (None if anonymous else cat.default_plan)
        if plan is not None and cat.plan(plan) is None:
            raise InvalidInput(f"unknown plan {plan!r}", code="unknown_plan")

        cid = new_id("cus")
        set_plan = self.plans.change_plan_fn(cid, plan, initial=True) if plan is not None else None
        give_allowance = (
            self.ledger.grant_fn(
                cid,
                cat.anonymous.allowance,
                source="promo",
                idempotency_key="anonymous-allowance",
                note="free allowance before sign-up",
            )
            if anonymous and cat.anonymous.allowance > 0
            else None
        )

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            existing = repo.id_by_external_id(s, external_id)
            if existing is not None:
                raise Conflict(
                    f"a customer with external_id {external_id!r} exists",
                    code="customer_exists",
                    details={"customer_id": existing},
                )
            repo.insert_customer(
                s,
                id=cid,
                external_id=external_id,
                email=email,
                name=name,
                anonymous=anonymous,
                metadata=metadata,
                now=now,
            )
            open_wallet(s, cid, now)
            # the plan and the anonymous allowance go in the same transaction: a customer never
            # exists without them
            if set_plan is not None:
                set_plan(s)
            if give_allowance is not None:
                give_allowance(s)
            # the response is read and rendered before the commit: nothing that was written
            # can fail to come back (and a failure here rolls the whole customer back)
            row = repo.get(s, cid)
            view = customer_view(row)
            json.dumps(view, ensure_ascii=False).encode("utf-8")
            if actor is not None:
                record(s, actor, "customer.create", ("customer", cid), after=view, at=now)
            self.events.emit(s, CustomerCreated(cid, external_id, email, name, plan, anonymous))
            return view

        return Command(fn, cid)

    def install_customer(self, install_id: str, *, before_create: Callable[[], None] | None = None) -> str:
        """The anonymous customer behind an ``X-Install-Id`` (made on first sight; ``before_create``
        runs first, e.g. to rate-limit new ids). Only anonymous customers are reachable this way:
        a customer an operator made is never spendable with just a header."""
        if not _INSTALL_RE.match(install_id or ""):
            raise InvalidInput(
                "X-Install-Id must be 8-128 characters of [A-Za-z0-9._:-]", code="invalid_install_id"
            )
        if not self.catalog().anonymous.enabled:
            raise AuthError("anonymous use is disabled: send an API key", code="anonymous_disabled")
        ext = f"{INSTALL_PREFIX}{install_id}"
        cid = self._install_lookup(ext)
        if cid is not None:
            return cid
        if before_create is not None:
            before_create()
        try:
            return str(self.create(ext, anonymous=True)["id"])
        except (Conflict, IntegrityError):
            cid = self._install_lookup(ext)
            if cid is None:
                raise self._unusable_install_id() from None
            return cid

    def _install_lookup(self, ext: str) -> str | None:
        with self.db.scope(write=False) as s:
            row = queries.install_customer(s, ext)
        if row is None:
            return None
        if not row.anonymous:
            raise self._unusable_install_id()
        return str(row.id)

    @staticmethod
    def _unusable_install_id() -> AuthError:
        return AuthError("this install id cannot be used: send an API key", code="install_id_unavailable")

    def update(self, customer_id: str, *, actor: Actor | None = None, **fields: Any) -> dict[str, Any]:
        allowed = {"email", "name", "metadata", "status"}
        values = {k: v for k, v in fields.items() if k in allowed and v is not None}
        check_json(values.get("metadata") or {}, "metadata")
        for label in ("email", "name"):
            if isinstance(values.get(label), str):
                check_text(values[label], label)
        if "status" in values and values["status"] not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}", code="invalid_status")
        if "email" in values and not _EMAIL_RE.match(values["email"]):
            raise InvalidInput("email is not a valid address", code="invalid_email")

        def fn(s: Tx) -> None:
            previous = repo.lock_status(s, customer_id)
            if previous is None:
                raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
            before = customer_view(repo.get(s, customer_id)) if actor is not None else None
            now = self.clock.now()
            repo.update_customer(s, customer_id, values, now)
            if actor is not None:
                after = customer_view(repo.get(s, customer_id))
                if after != before:  # a PATCH that changes nothing leaves no entry
                    target = ("customer", customer_id)
                    record(s, actor, "customer.update", target, before=before, after=after, at=now)
            status = values.get("status", previous)
            if status != previous:
                self.events.emit(s, CustomerStatusChanged(customer_id, status, previous))

        self.executor.call(fn, key=customer_id)
        return self.get(customer_id)

    # ---- reads --------------------------------------------------------------------------------
    @staticmethod
    def id_by_external_id(s: Tx, external_id: str) -> str | None:
        """Inside another domain's unit of work: the customer with this external id, if any."""
        return repo.id_by_external_id(s, external_id)

    @staticmethod
    def exists(s: Tx, customer_id: str) -> bool:
        return repo.get(s, customer_id) is not None

    @staticmethod
    def plan_of(s: Tx, customer_id: str) -> str | None:
        row = repo.get(s, customer_id)
        return None if row is None else row.plan

    def get(self, customer_id: str) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            row = repo.get(s, customer_id)
        if row is None:
            raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
        return customer_view(row)

    def find(self, ref: str) -> dict[str, Any]:
        """By id or by external id."""
        with self.db.scope(write=False) as s:
            row = queries.find(s, ref)
        if row is None:
            raise NotFound(f"customer {ref!r} not found", code="customer_not_found")
        return customer_view(row)

    def list(
        self,
        *,
        limit: int | None = None,
        after: str | None = None,
        status: str | None = None,
        q: str | None = None,
        include_anonymous: bool = False,
        max_bytes: int | None = None,
    ) -> dict[str, Any]:
        with self.db.scope(write=False) as s:
            return queries.list_customers(
                s,
                limit=limit,
                after=after,
                status=status,
                q=q,
                include_anonymous=include_anonymous,
                max_bytes=max_bytes,
            )
