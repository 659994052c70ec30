"""The sales funnel: acquisition (a customer first seen: an install id, a checkout, a sign-up),
activation (first successful charge), paid (first settled payment), each recorded once per
customer with its source and provider.

Acquisition by checkout and paid are recorded by the payments domain in the transaction of the
checkout / payment (:meth:`FunnelService.record`). Everything else is caught up by a scan of new
customers and new charges past a stored cursor (ids are time-ordered) - the ``funnel.catch_up``
job, also run before every report - so the debit path writes nothing for the funnel.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from tollkeep.customers.models import Customer
from tollkeep.funnel import repository as repo
from tollkeep.funnel.models import FunnelEvent
from tollkeep.kit.clock import Clock, iso
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.executor import WriteExecutor
from tollkeep.kit.models import table_of
from tollkeep.ledger.models import Operation

__all__ = ["STAGES", "FunnelService", "conversion"]

STAGES = ("acquisition", "activation", "paid")
F = table_of(FunnelEvent)
CU = table_of(Customer)
OP = table_of(Operation)
_CHARGES = ("usage", "settle")
SETTLE = timedelta(seconds=5)


def conversion(stages: dict[str, int]) -> dict[str, float | None]:
    """Rates between consecutive stages and overall (None when the earlier stage is empty)."""

    def rate(a: int, b: int) -> float | None:
        return None if a == 0 else round(b / a, 4)

    acq, act, paid = (stages.get(k, 0) for k in STAGES)
    return {
        "acquisition_to_activation": rate(acq, act),
        "activation_to_paid": rate(act, paid),
        "acquisition_to_paid": rate(acq, paid),
    }


class FunnelService:
    def __init__(self, db: Database, executor: WriteExecutor, *, clock: Clock, batch: int = 5000) -> None:
        self.db = db
        self.executor = executor
        self.clock = clock
        self.batch = batch

    @staticmethod
    def record(
        s: Tx,
        customer_id: str,
        stage: str,
        *,
        source: str | None = None,
        provider: str | None = None,
        at: datetime,
    ) -> None:
        """Inside another domain's unit of work: ``customer_id`` reached ``stage`` (once)."""
        repo.record(s, customer_id, stage, source=source, provider=provider, at=at)

    def catch_up(self) -> int:
        """Record acquisition of customers and activation of charges created since the last scan."""
        total = 0
        while True:
            n = self.executor.call(self._scan)
            total += n
            if n < self.batch:
                return total

    def _scan(self, s: Tx) -> int:
        """One page of each scan. Rows are recorded as found (insert-ignore), but the cursor only
        moves past rows older than ``SETTLE`` seconds: a row another process committed late, with
        an id a little older than ones already seen, is still read next time."""
        settled = self.clock.now() - SETTLE
        moved = 0
        for name, stmt, rec in (
            (
                "customers",
                select(CU.c.id, CU.c.anonymous, CU.c.created_at),
                lambda r: repo.record(
                    s,
                    r.id,
                    "acquisition",
                    source="install_id" if r.anonymous else "api",
                    provider=None,
                    at=r.created_at,
                ),
            ),
            (
                "charges",
                select(OP.c.id, OP.c.customer_id, OP.c.kind, OP.c.created_at),
                lambda r: (
                    r.kind in _CHARGES
                    and repo.record(
                        s, r.customer_id, "activation", source=r.kind, provider=None, at=r.created_at
                    )
                ),
            ),
        ):
            table = CU if name == "customers" else OP
            pos = repo.get_cursor(s, name)
            rows = s.execute(stmt.where(table.c.id > pos).order_by(table.c.id).limit(self.batch)).all()
            for r in rows:
                rec(r)
            done = [r for r in rows if r.created_at < settled]
            if done:
                repo.set_cursor(s, name, done[-1].id)
            moved = max(moved, len(done))
        return moved

    def report(self, *, since: datetime | None = None, until: datetime | None = None) -> dict[str, Any]:
        """Customers who reached each stage within [since, until), and the conversion rates."""
        self.catch_up()
        stmt = select(F.c.stage, func.count()).group_by(F.c.stage)
        if since is not None:
            stmt = stmt.where(F.c.at >= since)
        if until is not None:
            stmt = stmt.where(F.c.at < until)
        by_source = select(F.c.stage, F.c.source, F.c.provider, func.count()).group_by(
            F.c.stage, F.c.source, F.c.provider
        )
        if since is not None:
            by_source = by_source.where(F.c.at >= since)
        if until is not None:
            by_source = by_source.where(F.c.at < until)
        with self.db.scope(write=False) as s:
            counts = {str(k): int(v) for k, v in s.execute(stmt).all()}
            breakdown = [
                {"stage": st, "source": src, "provider": prov, "count": int(n)}
                for st, src, prov, n in s.execute(by_source).all()
            ]
        stages = {k: counts.get(k, 0) for k in STAGES}
        return {
            "since": iso(since),
            "until": iso(until),
            "stages": stages,
            "conversion": conversion(stages),
            "by_source": sorted(breakdown, key=lambda b: (STAGES.index(b["stage"]), -b["count"])),
        }
