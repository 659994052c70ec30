"""Postpaid metered plans: usage billed in arrears by Stripe (Billing Meter Events).

A plan with ``billing = "postpaid"`` and ``stripe_meters = { <meter> = "<event_name>" }`` is billed
by its Stripe subscription; every charge (``POST /v1/usage``, a settled hold) of a mapped meter by
a customer on that plan is reported to Stripe as one meter event:
``{event_name, payload: {stripe_customer_id, value: <quantity>}, identifier: <our usage event id>,
timestamp}``.

How it gets there, never in the request path:

1. **Enqueue** (the ``payments.meters`` job, and a hook in the plan-change transaction): committed
   usage operations of postpaid customers are written to the outbox, one row per usage event,
   with a row id derived from the usage event id (``mtr_<event id>``) and inserted ON CONFLICT
   DO NOTHING: scanning the same event twice, from two workers or after a restart, queues it
   once. A usage event belongs to the plan the customer was on when it was charged: the scan
   takes a customer's events since their current plan began (``customers.plan_changed_at``),
   and a customer *leaving* a postpaid plan has the rest of that plan's events queued in the
   transaction that changes the plan.
2. **Report** (the outbox's ``outbox.dispatch`` job, this module's sink): the Stripe customer is
   the one linked to our customer by a Stripe checkout (``provider_customers``); the meter event's
   ``identifier`` (and idempotency key) is our usage event id, so a retry after a timeout or a
   500 is never counted twice by Stripe (its "already exists" answer counts as done). A failure
   (Stripe down, no Stripe customer linked yet) leaves the row undelivered with its error, retried
   with the outbox's back-off (5 s, 10 s, ... up to an hour): ``tollkeep payments meter-events``
   lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import exists, func, literal, or_, select

from tollkeep.catalog import Catalog
from tollkeep.customers.models import Customer
from tollkeep.kit.clock import Clock
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import TollkeepError
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.models import table_of
from tollkeep.ledger.models import Operation, Wallet
from tollkeep.payments import repository as repo
from tollkeep.payments.providers import Providers
from tollkeep.payments.providers.base import ProviderNotConfigured

__all__ = ["METER_TOPIC", "MeterNotReportable", "MeterReporter", "meter_value"]

log = logging.getLogger("tollkeep.payments.meters")

METER_TOPIC = "stripe.meter_event"
ROW_PREFIX = "mtr_"
_CHARGES = ("usage", "settle")  # ledger OpKind.USAGE, OpKind.SETTLE: what charges a meter
_STRIPE_MAX_AGE = timedelta(days=35)  # Stripe refuses meter events older than this

OPS = table_of(Operation)
WAL = table_of(Wallet)
CUS = table_of(Customer)


class Enqueue(Protocol):
    """The outbox's idempotent insert (``OutboxService.enqueue``): True when the row is new."""

    def __call__(
        self,
        s: Tx,
        *,
        id: str,
        topic: str,
        customer_id: str | None,
        payload: dict[str, Any],
        created_at: datetime,
    ) -> bool: ...


class MeterNotReportable(TollkeepError):
    """A meter event cannot go to Stripe yet (no Stripe customer linked, Stripe not configured):
    it stays queued, with this reason, and is retried."""

    code = "meter_event_not_reportable"
    status = 409


def meter_value(quantity: Decimal | int | None) -> str | None:
    """A usage quantity as Stripe's ``value`` string (no exponent); None for nothing to report."""
    if quantity is None:
        return None
    q = Decimal(quantity)
    if q <= 0:
        return None
    text = format(q.normalize(), "f")
    return text


class MeterReporter:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        providers: Providers,
        catalog: Callable[[], Catalog],
        enqueue: Enqueue,
        *,
        clock: Clock,
        overlap_seconds: float = 120.0,
        batch_size: int = 1000,
    ) -> None:
        self.db = db
        self.executor = executor
        self.providers = providers
        self.catalog = catalog
        self.enqueue = enqueue
        self.clock = clock
        self.overlap = timedelta(seconds=overlap_seconds)
        self.batch_size = batch_size
        # scan only events charged after this (minus the overlap): an optimisation, not a cursor
        # of record (the row ids make a rescan harmless); None: not known yet
        self._floor: datetime | None = None
        self._floor_known = False

    # ---- 1. enqueue ------------------------------------------------------------------------------
    def _mapping(self, cat: Catalog) -> dict[str, dict[str, str]]:
        return {k: dict(p.stripe_meters) for k, p in cat.postpaid_plans().items() if p.stripe_meters}

    def scan(self) -> dict[str, int]:
        """Queue the committed usage events of postpaid customers not queued yet (a job)."""
        mapping = self._mapping(self.catalog())
        if not mapping:
            return {}
        now = self.clock.now()
        if not self._floor_known:
            with self.db.scope(write=False) as s:
                latest = s.execute(
                    select(func.max(_outbox().c.created_at)).where(_outbox().c.topic == METER_TOPIC)
                ).scalar_one_or_none()
            self._floor = _aware(latest) - self.overlap if latest is not None else None
            self._floor_known = True
        since = max(self._floor or now - _STRIPE_MAX_AGE, now - _STRIPE_MAX_AGE)

        def fn(s: Tx) -> tuple[int, int]:
            rows = self._candidates(s, mapping, since=since)
            return len(rows), self._queue(s, rows, mapping)

        seen, queued = self.executor.call(fn)
        if seen < self.batch_size:  # caught up: later scans start near now
            self._floor = now - self.overlap
        return {"queued": queued} if queued else {}

    def _candidates(
        self,
        s: Tx,
        mapping: dict[str, dict[str, str]],
        *,
        since: datetime,
        customer_id: str | None = None,
        plan: str | None = None,
        plan_since: datetime | None = None,
    ) -> Sequence[Any]:
        """Usage events (usage, settle) of mapped meters not yet in the outbox. Without
        ``customer_id``: of customers now on a postpaid plan, since their plan began. With it (a
        customer leaving ``plan``): theirs, since ``plan_since``."""
        ob = _outbox()
        meters = sorted({m for ms in mapping.values() for m in ms})
        queued = exists().where(ob.c.id == literal(ROW_PREFIX) + OPS.c.id)
        stmt = (
            select(OPS.c.id, OPS.c.customer_id, OPS.c.meter, OPS.c.quantity, OPS.c.created_at)
            .where(
                OPS.c.kind.in_(_CHARGES),
                OPS.c.meter.in_(meters),
                OPS.c.created_at >= since,
                ~queued,
            )
            .order_by(OPS.c.created_at, OPS.c.id)
            .limit(self.batch_size)
        )
        if customer_id is not None:
            assert plan is not None
            wallet = select(WAL.c.id).where(WAL.c.customer_id == customer_id).scalar_subquery()
            # by wallet: operations are indexed on (wallet_id, created_at)
            stmt = stmt.add_columns(literal(plan).label("plan")).where(OPS.c.wallet_id == wallet)
            if plan_since is not None:
                stmt = stmt.where(OPS.c.created_at > plan_since)
        else:
            stmt = (
                stmt.add_columns(CUS.c.plan)
                .select_from(CUS)
                .join(WAL, WAL.c.customer_id == CUS.c.id)
                .join(OPS, OPS.c.wallet_id == WAL.c.id)
                .where(
                    CUS.c.plan.in_(sorted(mapping)),
                    or_(CUS.c.plan_changed_at.is_(None), OPS.c.created_at > CUS.c.plan_changed_at),
                )
            )
        return s.execute(stmt).all()

    def _queue(self, s: Tx, rows: Sequence[Any], mapping: dict[str, dict[str, str]]) -> int:
        n = 0
        for r in rows:
            event_name = mapping.get(r.plan, {}).get(r.meter)
            value = meter_value(r.quantity)
            if event_name is None or value is None:
                continue
            at = _aware(r.created_at)
            n += self.enqueue(
                s,
                id=ROW_PREFIX + r.id,
                topic=METER_TOPIC,
                customer_id=r.customer_id,
                payload={
                    "identifier": r.id,
                    "customer_id": r.customer_id,
                    "plan": r.plan,
                    "meter": r.meter,
                    "event_name": event_name,
                    "value": value,
                    "timestamp": int(at.timestamp()),
                },
                created_at=at,
            )
        return n

    def plan_changed(self, s: Tx, event: Any) -> None:
        """In the transaction of a plan change (``PlanChanged``): a customer leaving a postpaid
        plan has that plan's remaining usage events queued now, while they are still its."""
        previous = getattr(event, "previous", None)
        mapping = self._mapping(self.catalog())
        if previous not in mapping:
            return
        now = self.clock.now()
        # the plan began at the plan change before this one (this one is the newest)
        wallet = select(WAL.c.id).where(WAL.c.customer_id == event.customer_id).scalar_subquery()
        began = s.execute(
            select(OPS.c.created_at)
            .where(OPS.c.wallet_id == wallet, OPS.c.kind == "plan_change")
            .order_by(OPS.c.created_at.desc())
            .limit(1)
            .offset(1)
        ).scalar_one_or_none()
        while True:
            rows = self._candidates(
                s,
                {previous: mapping[previous]},
                since=now - _STRIPE_MAX_AGE,
                customer_id=event.customer_id,
                plan=previous,
                plan_since=_aware(began) if began is not None else None,
            )
            self._queue(s, rows, mapping)
            if len(rows) < self.batch_size:
                return

    # ---- 2. report -------------------------------------------------------------------------------
    def report(self, message: Any) -> None:
        """The outbox sink of ``stripe.meter_event`` rows: one Billing Meter Event. Raises (the
        row stays queued with the reason, retried) when it cannot be reported now."""
        p = message.payload
        try:
            stripe = self.providers.get("stripe")
        except ProviderNotConfigured:
            raise MeterNotReportable("Stripe is not configured (TOLLKEEP_STRIPE_SECRET_KEY)") from None
        if not getattr(stripe, "has_api", False):
            raise MeterNotReportable("Stripe has no secret key here (TOLLKEEP_STRIPE_SECRET_KEY)")
        with self.db.scope(write=False) as s:
            ref = repo.provider_ref_of(s, "stripe", p["customer_id"])
        if ref is None:
            raise MeterNotReportable(
                f"customer {p['customer_id']} has no Stripe customer id (none linked by a Stripe "
                "checkout): the usage stays queued until one is"
            )
        stripe.report_meter_event(  # type: ignore[attr-defined]
            p["event_name"],
            ref,
            p["value"],
            p["identifier"],
            datetime.fromtimestamp(int(p["timestamp"]), UTC),
        )

    def queued(self, *, limit: int = 100, pending: bool = True) -> list[dict[str, Any]]:
        """Meter events in the outbox (``pending``: not reported yet), newest first."""
        ob = _outbox()
        stmt = select(ob).where(ob.c.topic == METER_TOPIC).order_by(ob.c.id.desc()).limit(limit)
        if pending:
            stmt = stmt.where(ob.c.delivered_at.is_(None))
        with self.db.scope(write=False) as s:
            return [r._asdict() for r in s.execute(stmt).all()]


def _outbox() -> Any:
    from tollkeep.outbox.models import OutboxEvent

    return table_of(OutboxEvent)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
