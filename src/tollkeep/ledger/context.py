"""What every ledger use case needs, and the steps every unit of work shares.

A use case (``usage.py``, ``holds.py``, ``grants.py``, ``refunds.py``, ``sweep.py``) validates its
request, then builds a :class:`~tollkeep.kit.executor.Command`: a unit of work keyed by the
customer whose wallet it touches. Inside: lock the wallet, check idempotency, load the wallet's
state, apply the pure rules (``domain.py``, ``rules.py``), write state and journal together.
Reads that only route a command (whose charge, whose hold) and the sweeper's scans run in a read
session: they never queue on the writer (SQLite's one writer thread only writes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from tollkeep.catalog import Catalog
from tollkeep.kit.clock import Clock, SystemClock
from tollkeep.kit.db import Database, Tx
from tollkeep.kit.errors import Forbidden, NotFound
from tollkeep.kit.events import EventBus
from tollkeep.kit.executor import WriteExecutor
from tollkeep.ledger import repository as repo
from tollkeep.ledger.domain import Draw, WalletState
from tollkeep.ledger.events import CreditsExhausted, CreditsLow
from tollkeep.ledger.keyspend import KeyLimitsOf
from tollkeep.ledger.rules import GrantMeta, balance_crossings

__all__ = ["BeforeSpend", "LedgerContext"]

# (tx, locked wallet row, wallet state, grant metadata, catalog, now): may add grants to the state
BeforeSpend = Callable[[Tx, Any, WalletState, GrantMeta, Catalog, datetime], None]


class LedgerContext:
    def __init__(
        self,
        db: Database,
        executor: WriteExecutor,
        catalog: Callable[[], Catalog],
        *,
        clock: Clock | None = None,
        hold_default_ttl: int = 300,
        hold_max_ttl: int = 86_400,
        before_spend: BeforeSpend | None = None,
        events: EventBus | None = None,
        key_limits: KeyLimitsOf | None = None,
    ) -> None:
        self.db = db
        self.executor = executor
        self.events = events or EventBus()  # CreditsGranted, CreditsLow, CreditsExhausted go out here
        self.catalog = catalog
        self.clock = clock or SystemClock()
        self.hold_default_ttl = hold_default_ttl
        self.hold_max_ttl = hold_max_ttl
        # called in a charge's or hold's unit of work before credits are drawn (the plans
        # domain grants the period's allowance there, lazily)
        self.before_spend = before_spend
        # an API key's spend limits, read in the charge's unit of work (the keys domain owns
        # them; the runtime wires it): see keyspend.py
        self.key_limits = key_limits

    @property
    def unit(self) -> str:
        """The ledger's integer unit (``"unit"`` of every answer): see ``CreditUnit.ledger_name``."""
        return self.catalog().credits.ledger_name

    def shown(self, out: dict[str, Any], *fields: str) -> dict[str, Any]:
        """``out`` with its ``display`` object: the display value of its integer ``fields``
        (credits, and money where the catalog states a credit's value). Never stored."""
        out["display"] = self.catalog().credits.display(**{f: out.get(f) for f in fields})
        return out

    # ---- reads outside the writer ---------------------------------------------------------------
    def owner(self, what: str, ref: str) -> str | None:
        """The customer behind a hold (``"hold"``) or a charge (``"charge"``): the key that
        routes a command on them, so it takes their lane and its place in the lock order like
        every other command of theirs. A read session: it does not queue on the writer."""
        with self.db.scope(write=False) as s:
            owner = repo.owner_of(s, what, ref)
        return None if owner is None else str(owner)

    # ---- steps inside a unit of work --------------------------------------------------------------
    @staticmethod
    def wallet(s: Tx, customer_id: str) -> Any:
        """The customer's wallet row, locked (with the customer's plan and status)."""
        w = repo.lock_wallet_of_customer(s, customer_id)
        if w is None:
            raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
        return w

    @staticmethod
    def wallet_and_prior(s: Tx, customer_id: str, kind: str, key: str) -> tuple[Any, Any]:
        """The customer's wallet row, locked, and the operation of ``kind`` already recorded
        under idempotency key ``key`` (None when there is none): one statement."""
        w, prior = repo.lock_wallet_and_find_operation(s, customer_id, kind, key)
        if w is None:
            raise NotFound(f"customer {customer_id!r} not found", code="customer_not_found")
        return w, prior

    @staticmethod
    def check_active(w: Any) -> None:
        if w.status != "active":
            raise Forbidden(f"customer is {w.status}", code="customer_inactive")

    @staticmethod
    def state(s: Tx, w: Any, *, grant_ids: tuple[str, ...] = ()) -> WalletState:
        """The wallet's state: its grants with credits left (the first ones in spend order in a
        wallet of many: :meth:`draw` reads on as far as it needs), and those named (what a hold
        or a charge drew from, to give back to)."""
        return repo.load_spend_head(s, w, grant_ids=grant_ids)

    @staticmethod
    def draw(s: Tx, st: WalletState, amount: int, now: datetime, **kw: Any) -> Draw:
        """``st.draw``, after reading as many grants in spend order as it needs."""
        if st.horizon is not None:
            repo.read_spendable(
                s, st, amount, now, meter=kw.get("meter"), exclude=kw.get("exclude", frozenset())
            )
        return st.draw(amount, now, **kw)

    @staticmethod
    def balance(s: Tx, st: WalletState, now: datetime) -> int:
        """The wallet's balance once ``st`` is persisted (or before it changes anything)."""
        return repo.balance(s, st, now)

    def after_spend(
        self, s: Tx, cat: Catalog, w: Any, st: WalletState, balance: int, spent: int, operation_id: str
    ) -> None:
        """Say so when a spend of ``spent`` that left ``balance`` crossed the customer's low
        threshold or took their available credits to 0 (``CreditsLow``, ``CreditsExhausted``).
        Only the numbers the charge has: no read, and no write unless it crossed."""
        if spent <= 0:
            return
        after = balance + st.overdraft_limit  # available: live credits + overdraft headroom
        low = cat.low_balance_for(w.plan)
        if after > 0 and after >= low:  # the common case: nothing crossed
            return
        before = after + spent
        low_crossed, exhausted = balance_crossings(before, after, low)
        unit = cat.credits.ledger_name
        if low_crossed:
            self.events.emit(s, CreditsLow(w.customer_id, after, before, low, unit, operation_id))
        if exhausted:
            self.events.emit(s, CreditsExhausted(w.customer_id, after, before, unit, operation_id))

    def wallet_balance(self, s: Tx, w: Any, now: datetime) -> int:
        """The balance of a locked wallet nothing was done to (a replay's answer)."""
        return repo.balance(s, self.state(s, w), now)
