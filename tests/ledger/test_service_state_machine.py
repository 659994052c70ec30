"""A hypothesis state machine that drives the real LedgerService (a real runtime on SQLite, a
frozen clock) and checks it, after every step, against an independent per-grant model written
from docs/ledger.md — not from the code.

Rules: grants (purchase, adjustment, expiring promos, promos scoped to a meter), usage debits,
holds by amount and by meter, settles below / equal to / above the hold (by amount and by
quantity), releases, full and partial refunds of usage and of settled holds, plan changes
(paid and free plans, carry-over), allowance renewal as periods pass, the sweeper, hold TTLs,
lowering the overdraft limit below what is used, and idempotent replays of all of them.

After every step:

* every live grant has exactly the credits the model says (spend order, refunds newest part
  first, overdraft repaid by new grants, ...), and a grant closed by a plan change never
  counts again;
* conservation: live - overdraft used + expired + closed + held + (charges - refunds) ==
  credits granted from outside (grants + plan allowances), from the real balances, holds,
  operations and journal;
* the ``available`` of GET balance is the ``available`` of a 402 for the same wallet state;
* the usage listing holds exactly the charges, newest first;
* ``tollkeep ledger verify`` is ok.

Shrinking a failing run of this machine can take minutes: it is off unless TK_SHRINK=1 (a
failure still prints its whole sequence of steps).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select

from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import Conflict, IdempotencyConflict, InsufficientCredits
from tollkeep.ledger.models import Grant, JournalEntry, Operation
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings
from .ledger_model import MOVES, PLANS, Insufficient, MCharge, MHold, Model, Parts, copy_model, merged, minus

START = datetime(2026, 1, 31, 20, 0, tzinfo=UTC)  # a day and a month end are a few hours away

CATALOG = """
version = "state-machine"

[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1

[meters.search]
aggregation = "sum"
[meters.search.price]
model = "per_unit"
unit_price = 1

[plans.basic]
name = "Basic"
prices = { usd = 900 }
[plans.basic.allowance]
amount = 20
period = "month"

[plans.daily]
name = "Daily"
prices = { usd = 500 }
[plans.daily.allowance]
amount = 7
period = "day"
priority = 15

[plans.free]
name = "Free"
[plans.free.allowance]
amount = 12
period = "day"
"""

# ------------------------------------------------------------------------------------------ the machine
KEYS = st.sampled_from([f"k{i}" for i in range(6)])
PICK = st.integers(0, 1_000)


class LedgerServiceMachine(RuleBasedStateMachine):
    @initialize(credits=st.integers(0, 40), overdraft=st.sampled_from([0, 0, 5, 12]))
    def start(self, credits: int, overdraft: int) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="tk-sm-"))
        (self.tmp / "catalog.toml").write_text(CATALOG)
        self.clock = FrozenClock(START)
        self.tk = Tollkeep(
            make_settings(f"sqlite:///{self.tmp / 'sm.db'}", catalog_path=self.tmp / "catalog.toml"),
            clock=self.clock,
        )
        self.cid = str(self.tk.customers.create("machine")["id"])
        self.m = Model(now=START)
        self.ids: dict[str, str] = {}  # model grant key -> real id
        self.usage_keys: dict[str, tuple[Any, str]] = {}
        self.hold_keys: dict[str, tuple[Any, str]] = {}
        self.grant_keys: dict[str, tuple[Any, str]] = {}
        self.refund_keys: dict[str, tuple[Any, dict[str, Any]]] = {}
        self.renamed: dict[str, str] = {}
        self.tick()
        if overdraft:
            self.m.od_limit = overdraft
            self.tk.ledger.set_overdraft(self.cid, overdraft)
        if credits:
            self.m.add_grant(credits, "purchase")
            self.m.external += credits
            self.tk.ledger.grant(self.cid, credits, idempotency_key="opening")
            self.bind_new_grants()

    def teardown(self) -> None:
        tk = getattr(self, "tk", None)
        if tk is not None:
            tk.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- plumbing
    def tick(self) -> None:
        """Each step one second later: every grant and charge has its own created_at."""
        self.m.now = self.clock.advance(timedelta(seconds=1))
        self.m.new = []
        self.saved = copy_model(self.m)

    def rollback(self) -> None:
        """The service refused the command: nothing it would have done happened."""
        self.m = self.saved

    def bind_new_grants(self) -> None:
        """Match the grants the service created in this step to the ones the model predicted."""
        with self.tk.db.scope(write=False) as s:
            rows = s.execute(select(Grant).where(Grant.wallet_id == self.wallet_id())).scalars().all()
            real = {
                r.id: (r.source, r.amount, r.priority, r.expires_at, r.meter, r.effective_at)
                for r in rows
                if r.id not in self.ids.values()
            }
        predicted = [self.m.grants[k] for k in self.m.new]
        for g in predicted:
            sig = (g.source, g.amount, g.priority, g.expires_at, g.meter, g.effective_at)
            match = next((rid for rid, rs in real.items() if rs == sig), None)
            assert match is not None, f"model expected a new grant {sig}; service made {list(real.values())}"
            del real[match]
            placeholder = g.key
            self.m.grants[match] = self.m.grants.pop(placeholder)
            g.key = match
            self.ids[placeholder] = match
            self.renamed[placeholder] = match
            for h in self.m.holds.values():
                h.parts = [(match if k == placeholder else k, a) for k, a in h.parts]
            for c in self.m.charges.values():
                c.parts = [(match if k == placeholder else k, a) for k, a in c.parts]
        assert not real, f"service made grants the model did not expect: {list(real.values())}"
        self.m.new = []

    def wallet_id(self) -> str:
        if not hasattr(self, "_wid"):
            from tollkeep.ledger import repository as repo

            with self.tk.db.scope(write=False) as s:
                self._wid = repo.wallet_id_for_customer(s, self.cid)
        return str(self._wid)

    # ---- grants
    @rule(
        amount=st.integers(1, 30),
        kind=st.sampled_from(["purchase", "adjustment", "promo", "promo_scoped", "promo_short"]),
        hours=st.integers(1, 40),
        key=st.one_of(st.none(), KEYS),
    )
    def grant(self, amount: int, kind: str, hours: int, key: str | None) -> None:
        self.tick()
        source = "promo" if kind.startswith("promo") else kind
        expires = None
        if kind.startswith("promo"):
            expires = self.m.now + (
                timedelta(seconds=hours * 7) if kind == "promo_short" else timedelta(hours=hours)
            )
        meter = "search" if kind == "promo_scoped" else None
        request = (amount, source, expires, meter)
        if key is not None and key in self.grant_keys:
            first, gid = self.grant_keys[key]
            if first != request:
                with pytest.raises(IdempotencyConflict):
                    self.tk.ledger.grant(
                        self.cid, amount, source=source, idempotency_key=key, expires_at=expires, meter=meter
                    )
                return
            res = self.tk.ledger.grant(
                self.cid, amount, source=source, idempotency_key=key, expires_at=expires, meter=meter
            )
            assert res["duplicate"] and res["id"] == gid
            return
        self.m.add_grant(amount, source, expires_at=expires, meter=meter)
        self.m.external += amount
        res = self.tk.ledger.grant(
            self.cid, amount, source=source, idempotency_key=key, expires_at=expires, meter=meter
        )
        assert not res["duplicate"]
        self.bind_new_grants()
        assert res["balance"] == self.m.balance()
        if key is not None:
            self.grant_keys[key] = (request, res["id"])

    # ---- usage
    @rule(meter=st.sampled_from(["api_call", "search"]), qty=st.integers(0, 12), key=KEYS)
    def usage(self, meter: str, qty: int, key: str) -> None:
        self.tick()
        quantity = None if meter == "api_call" else Decimal(qty)
        request = (meter, quantity)
        req = UsageRequest(self.cid, meter, quantity, key)
        if key in self.usage_keys:
            first, event_id = self.usage_keys[key]
            if first != request:
                with pytest.raises(IdempotencyConflict):
                    self.tk.ledger.record_usage(req)
                return
            res = self.tk.ledger.record_usage(req)
            assert res["duplicate"] and res["event_id"] == event_id
            assert res["balance"] == self.m.balance()
            return
        cost = 1 if meter == "api_call" else qty
        try:
            self.m.ensure_allowance()
            parts = self.m.draw(cost, meter)
        except Insufficient:
            self.rollback()
            event("usage 402")
            with pytest.raises(InsufficientCredits):
                self.tk.ledger.record_usage(req)
            return
        res = self.tk.ledger.record_usage(req)
        event("usage charged" + (" on overdraft" if parts and parts[-1][0] is None else ""))
        assert not res["duplicate"] and res["charged"] == cost
        self.bind_new_grants()
        self.m.charges[res["event_id"]] = MCharge(res["event_id"], cost, self.m.now, self._real(parts))
        self.usage_keys[key] = (request, res["event_id"])
        assert res["balance"] == self.m.balance()

    def _real(self, parts: Parts) -> Parts:
        """Parts computed before the service answered name new grants by placeholder."""
        return [(self.renamed.get(k, k) if k is not None else None, a) for k, a in parts]

    # ---- holds
    @rule(
        amount=st.integers(0, 15),
        by_meter=st.booleans(),
        ttl=st.sampled_from([5, 60, 600, 7200]),
        key=KEYS,
    )
    def hold(self, amount: int, by_meter: bool, ttl: int, key: str) -> None:
        self.tick()
        meter, quantity = ("search", amount) if by_meter else (None, None)
        kw: dict[str, Any] = ({"meter": "search", "quantity": amount} if by_meter else {"amount": amount}) | {
            "ttl_seconds": ttl,
            "idempotency_key": key,
        }
        request = (amount, by_meter, ttl)
        if key in self.hold_keys:
            first, hid = self.hold_keys[key]
            if first != request:
                with pytest.raises(IdempotencyConflict):
                    self.tk.ledger.create_hold(self.cid, **kw)
                return
            res = self.tk.ledger.create_hold(self.cid, **kw)
            assert res["duplicate"] and res["id"] == hid
            return
        try:
            self.m.ensure_allowance()
            parts = self.m.draw(amount, meter)
        except Insufficient:
            self.rollback()
            with pytest.raises(InsufficientCredits):
                self.tk.ledger.create_hold(self.cid, **kw)
            return
        res = self.tk.ledger.create_hold(self.cid, **kw)
        event("hold" + (" on overdraft" if parts and parts[-1][0] is None else ""))
        assert not res["duplicate"] and res["amount"] == amount and res["status"] == "open"
        self.bind_new_grants()
        self.m.holds[res["id"]] = MHold(
            res["id"], amount, meter, quantity, self.m.now + timedelta(seconds=ttl), self._real(parts)
        )
        self.hold_keys[key] = (request, res["id"])
        assert res["balance"] == self.m.balance()

    # the money paths get more steps than the administrative ones (rules are drawn uniformly)
    @rule(amount=st.integers(0, 15), by_meter=st.booleans(), key=KEYS)
    def another_hold(self, amount: int, by_meter: bool, key: str) -> None:
        self.hold(amount, by_meter, 600, key)

    @precondition(lambda self: any(h.status == "open" for h in self.m.holds.values()))
    @rule(pick=PICK, how=st.sampled_from(["below", "equal", "above", "quantity"]), delta=st.integers(0, 8))
    def settle_an_open_hold(self, pick: int, how: str, delta: int) -> None:
        open_ = sorted(h for h, mh in self.m.holds.items() if mh.status == "open")
        self.settle(sorted(self.m.holds).index(open_[pick % len(open_)]), how, delta)

    def _pick_hold(self, pick: int) -> MHold:
        holds = sorted(self.m.holds)
        return self.m.holds[holds[pick % len(holds)]]

    @precondition(lambda self: bool(self.m.holds))
    @rule(
        pick=PICK,
        how=st.sampled_from(["below", "equal", "above", "quantity"]),
        delta=st.integers(0, 8),
    )
    def settle(self, pick: int, how: str, delta: int) -> None:
        self.tick()
        h = self._pick_hold(pick)
        if how == "quantity" and h.meter is None:
            how = "equal"
        amount = {"below": max(0, h.amount - delta), "equal": h.amount, "above": h.amount + delta}.get(how)
        kw: dict[str, Any] = {"quantity": h.amount + delta - 4} if how == "quantity" else {"amount": amount}
        if how == "quantity":
            kw["quantity"] = max(0, kw["quantity"])
            amount = kw["quantity"]  # search: 1 credit a unit
        assert amount is not None
        resolution = ("settle", tuple(sorted(kw.items())))
        call = lambda: self.tk.ledger.resolve_hold(self.cid, h.id, action="settle", **kw)  # noqa: E731
        if h.status != "open":
            self._resolved_again(h, resolution, call)
            return
        if self.m.now >= h.expires_at:
            with pytest.raises(Conflict) as e:
                call()
            assert e.value.code == "hold_expired"
            return
        try:
            if amount <= h.amount:
                taken, od_unplaced = self.m.give_back(h.parts, h.amount - amount, to_dead=True)
                charge_parts = minus(h.parts, taken)
            else:
                od_unplaced = 0
                extra = self.m.draw(amount - h.amount, h.meter)
                charge_parts = merged(h.parts, extra)
        except Insufficient:
            self.rollback()
            with pytest.raises(InsufficientCredits):
                call()
            return
        res = call()
        event(f"settle {how}" + (" (overdraft part not repaid)" if od_unplaced else ""))
        assert not res["duplicate"] and res["status"] == "settled" and res["charged"] == amount
        self.bind_new_grants()
        h.status, h.resolution, h.charge = "settled", resolution, res["operation_id"]
        self.m.charges[res["operation_id"]] = MCharge(
            res["operation_id"],
            amount,
            self.m.now,
            self._real(charge_parts),
            hold_id=h.id,
            od_unplaced_at_settle=od_unplaced,
        )
        assert res["balance"] == self.m.balance()

    def _resolved_again(self, h: MHold, resolution: tuple[Any, ...], call: Any) -> None:
        if h.status in ("settled", "released") and resolution == h.resolution:
            res = call()
            assert res["duplicate"] and res["status"] == h.status
        else:
            with pytest.raises(Conflict) as e:
                call()
            assert e.value.code == "hold_resolved"

    @precondition(lambda self: bool(self.m.holds))
    @rule(pick=PICK)
    def release(self, pick: int) -> None:
        self.tick()
        h = self._pick_hold(pick)
        call = lambda: self.tk.ledger.resolve_hold(self.cid, h.id, action="release")  # noqa: E731
        resolution = ("release", ())
        if h.status != "open":
            self._resolved_again(h, resolution, call)
            return
        self.m.give_back(h.parts, h.amount, to_dead=True)
        event("release" + (" of an expired hold" if self.m.now >= h.expires_at else ""))
        res = call()
        assert not res["duplicate"] and res["status"] == "released" and res["charged"] == 0
        self.bind_new_grants()
        h.status, h.resolution = "released", resolution
        assert res["balance"] == self.m.balance()

    # ---- refunds
    @precondition(lambda self: bool(self.m.charges))
    @rule(pick=PICK, amount=st.one_of(st.none(), st.integers(1, 10)), key=KEYS)
    def refund(self, pick: int, amount: int | None, key: str) -> None:
        self.tick()
        charges = sorted(self.m.charges)
        c = self.m.charges[charges[pick % len(charges)]]
        request = (c.id, amount)
        call = lambda: self.tk.ledger.refund(c.id, idempotency_key=key, amount=amount)  # noqa: E731
        if key in self.refund_keys:
            first, result = self.refund_keys[key]
            if first != request:
                with pytest.raises(IdempotencyConflict):
                    call()
                return
            res = call()
            assert res["duplicate"] and res["id"] == result["id"]
            return
        refundable = c.amount - c.refunded
        want = refundable if amount is None else amount
        if want <= 0 or want > refundable:
            with pytest.raises(Conflict) as e:
                call()
            assert e.value.code == "refund_exceeds_charge"
            return
        if c.od_unplaced_at_settle:
            event("refund of a settled hold whose overdraft part was repaid")
        if any(k is not None and self.m.grants[k].closed for k, _ in c.parts):
            event("refund of a charge on a closed grant")
        taken, _ = self.m.give_back(c.parts, want, to_dead=False)
        event(
            "refund " + ("of a settled hold" if c.hold_id else "of usage") + (" (partial)" if amount else "")
        )
        if len(self.m.new):
            event("refund made a refund grant")
        res = call()
        assert not res["duplicate"] and res["amount"] == want
        self.bind_new_grants()
        c.refunded += want
        c.parts = minus(c.parts, taken)
        self.refund_keys[key] = (request, res)
        assert res["balance"] == self.m.balance()

    # ---- plans
    @rule(plan=st.sampled_from([None, "basic", "daily", "free"]))
    def change_plan(self, plan: str | None) -> None:
        self.tick()
        if plan == self.m.plan:
            assert self.tk.plans.change_plan(self.cid, plan)["changed"] is False
            return
        m = self.m
        old = m.plan
        closing = [g for g in m.grants.values() if g.source == "plan_allowance" and g.live(m.now)]
        left = sum(g.remaining for g in closing)
        for g in closing:
            g.closed = True
        carry = (
            old is not None
            and PLANS[old][3]
            and plan is not None
            and not PLANS[plan][3]
            and not m.carryover_done
        )
        carried = 0
        if carry and left:
            carried = left
            for g in closing:
                g.remaining = 0  # moved into the carry-over promo
            m.add_grant(left, "promo")
            m.carried += left
        m.carryover_done = m.carryover_done or bool(carry)
        m.plan, m.allowance_until = plan, None
        m.ensure_allowance()
        event(f"plan change {old} -> {plan}" + (" with carry-over" if carried else ""))
        res = self.tk.plans.change_plan(self.cid, plan)
        assert res["changed"] and res["carried_over"] == carried
        self.bind_new_grants()

    # ---- time, sweeper, overdraft
    @rule(
        seconds=st.sampled_from([-1, -1, 0, 5, 60, 3600, 4 * 3600, 13 * 3600, 26 * 3600]), sweep=st.booleans()
    )
    def time_passes(self, seconds: int, sweep: bool) -> None:
        """Time moves on (holds time out, grants expire, periods end); the sweeper may run."""
        self.tick()
        if seconds < 0:  # to the exact instant the next grant or hold expires
            ends = [
                g.expires_at for g in self.m.grants.values() if g.expires_at and g.expires_at > self.m.now
            ]
            ends += [
                h.expires_at
                for h in self.m.holds.values()
                if h.status == "open" and h.expires_at > self.m.now
            ]
            if ends:
                self.clock.set(min(ends))
                event("time moved to an exact expiry instant")
        self.m.now = self.clock.advance(timedelta(seconds=max(seconds, 0)))
        if not sweep:
            return
        released = 0
        for h in sorted(self.m.holds.values(), key=lambda h: (h.expires_at, h.id)):
            if h.status == "open" and h.expires_at <= self.m.now:
                self.m.give_back(h.parts, h.amount, to_dead=True)
                h.status, h.resolution = "expired", ("expired",)
                released += 1
        event(f"sweep released {min(released, 2)}{'+' if released >= 2 else ''} holds")
        out = self.tk.ledger.sweep()
        assert out["holds_released"] == released
        self.m.ensure_allowance()
        self.tk.plans.renew_allowances()
        self.bind_new_grants()

    @rule(limit=st.integers(0, 25))
    def set_overdraft(self, limit: int) -> None:
        self.tick()
        self.m.od_limit = limit  # may be below what is used: then no headroom, nothing else moves
        self.tk.ledger.set_overdraft(self.cid, limit)

    # ---- checks after every step
    @invariant()
    def agrees_with_the_model(self) -> None:
        m, tk = self.m, self.tk
        b = tk.balance(self.cid)
        assert b["overdraft_used"] == m.od_used
        assert b["held"] == m.held()
        live_db = {g["id"]: g["remaining"] for g in b["grants"] if g["live"]}
        live_model = {g.key: g.remaining for g in m.grants.values() if g.live(m.now) and g.remaining}
        assert live_db == live_model, "live grants differ from the model"
        assert b["balance"] == m.balance()
        for g in m.grants.values():
            if g.closed:
                assert live_db.get(g.key, 0) == 0, f"grant {g.key} closed by a plan change counts again"

        # conservation, from the real balances, holds, operations and journal
        with tk.db.scope(write=False) as s:
            wid = self.wallet_id()
            removed = dict(
                s.execute(
                    select(JournalEntry.kind, func.sum(JournalEntry.delta))
                    .where(JournalEntry.wallet_id == wid, JournalEntry.grant_id.is_not(None))
                    .group_by(JournalEntry.kind)
                ).all()
            )
            grants = s.execute(select(Grant).where(Grant.wallet_id == wid)).scalars().all()
            ops = s.execute(
                select(Operation.kind, func.sum(Operation.amount), func.sum(Operation.refunded))
                .where(Operation.wallet_id == wid)
                .group_by(Operation.kind)
            ).all()
        by_kind = {k: (int(a or 0), int(r or 0)) for k, a, r in ops}
        closed_ids = {g.key for g in m.grants.values() if g.closed}
        expired = -int(removed.get("expire", 0) or 0) + sum(
            g.remaining
            for g in grants
            if g.id not in closed_ids and g.expires_at is not None and g.expires_at <= m.now
        )
        closed = (
            -sum(int(v or 0) for k, v in removed.items() if k not in MOVES and k != "expire")
            - m.carried
            + sum(g.remaining for g in grants if g.id in closed_ids and g.id not in live_db)
        )
        charges = by_kind.get("usage", (0, 0))[0] + by_kind.get("settle", (0, 0))[0]
        refunds = by_kind.get("refund", (0, 0))[0]
        assert charges == sum(c.amount for c in m.charges.values())
        assert refunds == sum(c.refunded for c in m.charges.values())
        assert expired + closed == m.dead_total(), "ended credits differ from the model"
        live = sum(live_db.values())
        assert live - b["overdraft_used"] + expired + closed + b["held"] + charges - refunds == m.external, (
            "conservation: live - overdraft + expired + closed + held + charges - refunds "
            "!= credits granted from outside"
        )

        # the usage listing: every charge, newest first
        listed: list[dict[str, Any]] = []
        after = None
        while True:
            page = tk.usage(self.cid, limit=500, after=after)
            listed += page["data"]
            if not page["next"]:
                break
            after = page["next"]
        expect = sorted(m.charges.values(), key=lambda c: c.created_at, reverse=True)
        assert {e["event_id"]: (e["charged"], e["refunded"]) for e in listed} == {
            c.id: (c.amount, c.refunded) for c in expect
        }
        assert [e["event_id"] for e in listed] == [c.id for c in expect], "listing not newest first"

        # available: what a charge could draw now (its meter's scoped credits included, plus the
        # overdraft headroom); GET balance and a 402 agree for the same wallet state. Not while
        # an allowance is due: the refused attempt would grant it first, the balance shows it
        # after the next charge or sweep.
        headroom = max(0, m.od_limit - m.od_used)
        unscoped = sum(g.remaining for g in m.grants.values() if g.live(m.now) and g.meter is None)
        scoped = sum(g.remaining for g in m.grants.values() if g.live(m.now) and g.meter == "search")
        assert b["available"] == unscoped + headroom
        assert b.get("available_by_meter", {}).get("search", b["available"]) == unscoped + scoped + headroom
        due = m.plan is not None and (m.allowance_until is None or m.allowance_until <= m.now)
        if not due:
            with pytest.raises(InsufficientCredits) as e:
                tk.ledger.create_hold(self.cid, idempotency_key="probe-402", amount=10**6)
            assert e.value.details["available"] == b["available"], "balance and 402 disagree on available"
            with pytest.raises(InsufficientCredits) as e:
                tk.ledger.record_usage(UsageRequest(self.cid, "search", Decimal(10**6), "probe-402"))
            assert e.value.details["available"] == unscoped + scoped + headroom

        report = tk.verify()
        assert report.ok, report.problems


LedgerServiceMachine.TestCase.settings = settings(
    phases=list(Phase) if os.environ.get("TK_SHRINK") == "1" else [p for p in Phase if p != Phase.shrink],
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestLedgerServiceMachine = LedgerServiceMachine.TestCase
