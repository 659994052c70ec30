"""The ledger's use cases behind one facade, :class:`LedgerService`.

Each use case lives in a module of its own (``usage.py``, ``holds.py``, ``grants.py``,
``refunds.py``, ``sweep.py``): it validates a typed request (``requests.py``) and builds a
:class:`~tollkeep.kit.executor.Command`, a unit of work keyed by the customer whose wallet it
touches, which the :class:`~tollkeep.kit.executor.WriteExecutor` runs (group commit on SQLite,
row locks on PostgreSQL). The ``*_fn`` methods return the command (to run it in a unit of work of
one's own, or through ``executor.acall``); the others run it and wait for the commit. Answers
are the JSON of typed results (``results.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tollkeep.audit import record
from tollkeep.kit.actor import Actor
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import InvalidInput
from tollkeep.kit.executor import Command
from tollkeep.ledger import clawback, grants, holds, queries, refunds, usage
from tollkeep.ledger import repository as repo
from tollkeep.ledger import sweep as sweeper
from tollkeep.ledger.context import BeforeSpend, LedgerContext
from tollkeep.ledger.kinds import GrantSource, OpKind
from tollkeep.ledger.requests import (
    ExtendRequest,
    GrantRequest,
    HoldRequest,
    RefundRequest,
    ReleaseRequest,
    SettleRequest,
    UsageRequest,
    check_amount,
)
from tollkeep.ledger.results import HoldView, OverdraftResult

__all__ = ["BeforeSpend", "LedgerService", "UsageRequest"]


class LedgerService(LedgerContext):
    # ================================================================ grants
    def grant(self, customer_id: str, amount: int, **kw: Any) -> dict[str, Any]:
        """Grant credits (see :meth:`grant_fn` for the options) and wait for the commit."""
        return self.executor.call(self.grant_fn(customer_id, amount, **kw))

    def grant_fn(
        self,
        customer_id: str,
        amount: int,
        *,
        source: str = GrantSource.PURCHASE,
        idempotency_key: str | None = None,
        expires_at: datetime | None = None,
        effective_at: datetime | None = None,
        priority: int | None = None,
        meter: str | None = None,
        note: str | None = None,
        actor: Actor | None = None,
    ) -> Command[dict[str, Any]]:
        """``actor``: who asked, for the audit log (None: an internal grant, not audited)."""
        req = GrantRequest(
            customer_id, amount, source, idempotency_key, expires_at, effective_at, priority, meter, note
        )
        return grants.grant_command(self, req, actor=actor)

    # ================================================================ usage (debit)
    def record_usage(self, req: UsageRequest) -> dict[str, Any]:
        return self.executor.call(usage.usage_command(self, req))

    async def arecord_usage(self, req: UsageRequest) -> dict[str, Any]:
        return await self.executor.acall(usage.usage_command(self, req))

    def usage_fn(self, req: UsageRequest) -> Command[dict[str, Any]]:
        return usage.usage_command(self, req)

    # ================================================================ holds
    def create_hold(self, customer_id: str, **kw: Any) -> dict[str, Any]:
        """Reserve credits (see :meth:`hold_fn` for the options) and wait for the commit."""
        return self.executor.call(self.hold_fn(customer_id, **kw))

    def hold_fn(
        self,
        customer_id: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        meter: str | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
        ttl_seconds: int | None = None,
        api_key_id: str | None = None,
        opened_by: str | None = None,
    ) -> Command[dict[str, Any]]:
        req = HoldRequest(
            customer_id,
            idempotency_key,
            amount,
            meter,
            quantity,
            properties,
            ttl_seconds,
            api_key_id,
            opened_by,
        )
        return holds.hold_command(self, req)

    def hold_view(self, hold: Any) -> dict[str, Any]:
        """A ``holds`` row (or a dict of its columns) as the API shows it."""
        return self.shown(HoldView.of(hold, self.unit).to_json(), "amount", "settled_amount")

    def resolve_hold(
        self,
        customer_id: str | None,
        hold_id: str,
        *,
        action: str,
        amount: int | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        return self.executor.call(
            self.resolve_fn(
                customer_id, hold_id, action=action, amount=amount, quantity=quantity, properties=properties
            )
        )

    def resolve_fn(
        self,
        customer_id: str | None,
        hold_id: str,
        *,
        action: str,
        amount: int | None = None,
        quantity: Any = None,
        properties: Mapping[str, Any] | None = None,
        by_server: bool = False,
    ) -> Command[dict[str, Any]]:
        """Settle (for an amount, or for the actual quantity rated now, or both: the amount is
        charged and the quantity counted) or release a hold. A hold resolves once.
        ``customer_id`` None (the admin): any customer's hold."""
        req: SettleRequest | ReleaseRequest
        if action == OpKind.SETTLE:
            req = SettleRequest(customer_id, hold_id, amount, quantity, properties, by_server)
        elif action == OpKind.RELEASE:
            req = ReleaseRequest(customer_id, hold_id, by_server)
        else:
            raise InvalidInput("action must be settle or release")
        req = req.validate()
        key = customer_id if customer_id is not None else self.owner("hold", hold_id)
        return holds.resolve_command(self, req, key=key)

    def extend_hold(self, customer_id: str | None, hold_id: str, *, ttl_seconds: int) -> dict[str, Any]:
        """Move an open hold's expiry to ``ttl_seconds`` from now and wait for the commit."""
        return self.executor.call(self.extend_fn(customer_id, hold_id, ttl_seconds=ttl_seconds))

    def extend_fn(
        self, customer_id: str | None, hold_id: str, *, ttl_seconds: int, by_server: bool = False
    ) -> Command[dict[str, Any]]:
        """Move an open, unexpired hold's expiry to ``ttl_seconds`` (1 to the hold max TTL) from
        now; a hold is never shortened. ``customer_id`` None (the admin, a server key): any
        customer's hold; a hold a server key opened takes a server key (or the admin)."""
        req = ExtendRequest(customer_id, hold_id, ttl_seconds, by_server).validate(max_ttl=self.hold_max_ttl)
        key = customer_id if customer_id is not None else self.owner("hold", hold_id)
        return holds.extend_command(self, req, key=key)

    # ================================================================ refunds
    def refund(
        self,
        operation_id: str,
        *,
        idempotency_key: str,
        amount: int | None = None,
        reason: str | None = None,
        actor: Actor | None = None,
    ) -> dict[str, Any]:
        req = RefundRequest(operation_id, idempotency_key, amount, reason).validate()
        owner = self.owner("charge", operation_id)
        return self.executor.call(refunds.refund_command(self, req, key=owner, actor=actor))

    # ================================================================ clawback
    def clawback_fn(
        self,
        customer_id: str,
        amount: int,
        *,
        idempotency_key: str,
        first_grant: str | None = None,
        reason: str | None = None,
    ) -> Command[dict[str, Any]]:
        """Take back up to ``amount`` credits (a refunded payment's), once per idempotency key:
        from ``first_grant`` first, never past the overdraft limit; the rest is the
        ``shortfall`` of the answer (see :mod:`tollkeep.ledger.clawback`)."""
        return clawback.clawback_command(
            self, customer_id, amount, idempotency_key=idempotency_key, first_grant=first_grant, reason=reason
        )

    # ================================================================ overdraft
    def set_overdraft(self, customer_id: str, limit: int, *, actor: Actor | None = None) -> dict[str, Any]:
        """``actor``: who asked (a changed limit is audited in the same transaction, before and
        after; setting the limit a wallet has already changes nothing and is not)."""
        check_amount(limit, minimum=0, what="overdraft limit")

        def fn(s: Tx) -> dict[str, Any]:
            now = self.clock.now()
            w = self.wallet(s, customer_id)
            repo.set_wallet(s, w.id, overdraft_limit=limit, updated_at=now)
            out = OverdraftResult(customer_id, limit, w.overdraft_used).to_json()
            if actor is not None and w.overdraft_limit != limit:
                before = OverdraftResult(customer_id, w.overdraft_limit, w.overdraft_used).to_json()
                record(s, actor, "overdraft.set", ("customer", customer_id), before=before, after=out, at=now)
            return out

        return self.executor.call(Command(fn, customer_id))

    # ================================================================ per-key spend
    def key_spend(self, key_id: str) -> dict[str, dict[str, int]]:
        """What an API key has spent and holds (``total``, this UTC ``month``, ``day``): what its
        spend limits count (see ``keyspend.py``). A read session."""
        with self.db.scope(write=False) as s:
            return queries.key_spend(s, key_id, self.clock.now())

    # ================================================================ sweeper
    def sweep(self, *, limit: int = 500, actor: Actor | None = None) -> dict[str, int]:
        """Release expired holds, then expire grants past their end (see ``sweep.py``).

        ``actor``: who asked (an admin's sweep that moved anything is audited with its counts;
        the background job's sweeps are not). A sweep is many units of work, one per wallet,
        each committed on its own: the entry is written once they have, in a unit of work of
        its own."""
        out = sweeper.sweep(self, limit=limit).to_json()
        if actor is not None and any(out.values()):

            def fn(s: Tx) -> None:
                record(s, actor, "ledger.sweep", ("ledger", None), after=out, at=self.clock.now())

            self.executor.call(Command(fn, None))
        return out
