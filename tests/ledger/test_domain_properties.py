"""Property tests of the pure ledger rules (no database): random sequences of grants, debits,
holds, settles, releases, refunds, expiries and overdraft changes, driven through
:class:`tollkeep.ledger.domain.WalletState` exactly the way the service drives it."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from tollkeep.kit.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from tollkeep.ledger.domain import (
    DEFAULT_PRIORITY,
    SOURCES,
    Draw,
    GrantState,
    WalletState,
    check_replay,
    merge_draws,
    request_hash,
    subtract_draws,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
METERS = (None, "a", "b")
EXCLUDES: tuple[frozenset[str], ...] = (frozenset(), frozenset({"plan_allowance"}))

prop = settings(deadline=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow])


# ------------------------------------------------------------------------------------------ helpers
def order_key(g: GrantState) -> tuple[Any, ...]:
    """Spend order written out independently of domain.spend_order: priority, earliest expiry
    (never-expiring last), oldest, id."""
    return (g.priority, g.expires_at is None, g.expires_at or START, g.created_at, g.id)


def snapshot(ws: WalletState) -> Any:
    return (
        {gid: (g.remaining, g.amount) for gid, g in ws.grants.items()},
        ws.overdraft_used,
        len(ws.entries),
        list(ws.new_grants),
        set(ws.dirty),
        ws.overdraft_dirty,
    )


def drawn_from_journal(
    ws: WalletState, *, operation_id: str | None = None, hold_id: str | None = None
) -> Draw:
    """What repository.drawn_by computes, over the in-memory journal."""
    totals: dict[str, int] = {}
    od = 0
    for e in ws.entries:
        if (hold_id is not None and e.hold_id != hold_id) or (
            hold_id is None and e.operation_id != operation_id
        ):
            continue
        if e.grant_id is None:
            od -= e.delta
        else:
            totals[e.grant_id] = totals.get(e.grant_id, 0) - e.delta
    return Draw(tuple((g, a) for g, a in totals.items() if a > 0), max(od, 0))


def check_spend_order(
    before: dict[str, GrantState],
    ws: WalletState,
    draw: Draw,
    now: datetime,
    meter: str | None,
    exclude: frozenset[str],
) -> None:
    usable = {gid: g for gid, g in before.items() if g.usable_for(now, meter, exclude)}
    taken = dict(draw.parts)
    assert set(taken) <= set(usable), "drew from a grant that was not usable"
    # parts come in spend order, every part but the last empties its grant
    keys = [order_key(usable[g]) for g, _ in draw.parts]
    assert keys == sorted(keys)
    for gid, amt in draw.parts[:-1]:
        assert amt == usable[gid].remaining
    # a usable grant that still has credits comes after every grant drawn from
    for gid, g in usable.items():
        if ws.grants[gid].remaining > 0:
            for t in taken:
                if t != gid:
                    assert order_key(usable[t]) < order_key(g), "spend order violated"
    # the overdraft is touched only when every usable grant is empty
    if draw.overdraft:
        assert all(ws.grants[gid].remaining == 0 for gid in usable)


@dataclass
class Charge:
    op_id: str
    amount: int
    hold_id: str | None = None
    refunded: int = 0
    attributions: list[Draw] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ machine
class LedgerMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    charges = Bundle("charges")

    @initialize(limit=st.integers(0, 30))
    def setup(self, limit: int) -> None:
        self.now = START
        self.ws = WalletState("wal_test", overdraft_limit=limit)
        self.seq = 0
        self.usage_keys: dict[str, tuple[str, dict[str, Any]]] = {}  # key -> (hash, first result)
        self.charged: dict[str, int] = {}  # key -> times actually charged
        self.refund_keys: dict[str, tuple[str, dict[str, Any]]] = {}
        self.open_holds: dict[str, Draw] = {}
        self.hold_meter: dict[str, str | None] = {}
        self.hold_expect: dict[str, int] = {}  # hold -> what its journal entries must take
        self.op_net: dict[str, int] = {}  # operation -> what its journal entries must sum to
        self.charge_by_op: dict[str, Charge] = {}

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq:06d}"

    def _grant(
        self,
        amount: int,
        source: str,
        *,
        priority: int | None = None,
        expires: timedelta | None = None,
        effective: timedelta = timedelta(0),
        meter: str | None = None,
        op: str | None = None,
        hold_id: str | None = None,
    ) -> GrantState:
        g = GrantState(
            id=self._id("grt"),
            amount=amount,
            remaining=0,
            source=source,
            priority=DEFAULT_PRIORITY[source] if priority is None else priority,
            effective_at=self.now + effective,
            expires_at=None if expires is None else self.now + effective + expires,
            created_at=self.now,
            meter=meter,
        )
        op = op or self._id("op")
        od_before = self.ws.overdraft_used
        bal_before = self.ws.balance(self.now)
        if hold_id is not None:
            repay = self.ws.add_grant(g, now=self.now, operation_id=op, hold_id=hold_id)
        else:
            repay = self.ws.add_grant(g, now=self.now, operation_id=op)
        assert self.ws.overdraft_used == od_before - repay
        if meter is None and g.live(self.now):
            assert repay == min(amount, od_before), "an unscoped live grant repays the overdraft first"
            assert self.ws.balance(self.now) == bal_before + amount
        else:
            assert repay == 0
        self.op_net[op] = self.op_net.get(op, 0) + amount
        return g

    # ---- grants ------------------------------------------------------------------------------
    @rule(
        amount=st.integers(1, 40),
        source=st.sampled_from(SOURCES),
        priority=st.one_of(st.none(), st.integers(0, 60)),
        expires=st.one_of(st.none(), st.integers(1, 72).map(lambda h: timedelta(hours=h))),
        effective=st.sampled_from([timedelta(0), timedelta(0), timedelta(hours=5)]),
        meter=st.sampled_from(METERS),
    )
    def grant(
        self,
        amount: int,
        source: str,
        priority: int | None,
        expires: timedelta | None,
        effective: timedelta,
        meter: str | None,
    ) -> None:
        self._grant(amount, source, priority=priority, expires=expires, effective=effective, meter=meter)

    @rule(amount=st.integers(-3, 0))
    def bad_grant(self, amount: int) -> None:
        before = snapshot(self.ws)
        with pytest.raises(InvalidInput):
            self._grant(amount, "purchase")
        assert snapshot(self.ws) == before

    # ---- debits with idempotency ------------------------------------------------------------
    def _draw(
        self,
        amount: int,
        *,
        kind: str,
        op: str,
        meter: str | None,
        exclude: frozenset[str],
        hold_id: str | None = None,
    ) -> Draw | None:
        before_grants = copy.deepcopy(self.ws.grants)
        before = snapshot(self.ws)
        bal = self.ws.balance(self.now)
        try:
            d = self.ws.draw(
                amount, self.now, kind=kind, operation_id=op, hold_id=hold_id, meter=meter, exclude=exclude
            )
        except InsufficientCredits as exc:
            assert snapshot(self.ws) == before, "a failed draw changed the wallet"
            assert exc.details["required"] == amount
            assert exc.details["available"] < amount
            assert (
                exc.details["available"] == self.ws.spendable(self.now, meter, exclude) + self.ws.headroom()
            )
            return None
        assert d.total == amount
        check_spend_order(before_grants, self.ws, d, self.now, meter, exclude)
        assert self.ws.balance(self.now) == bal - amount
        self.op_net[op] = self.op_net.get(op, 0) - amount
        return d

    @rule(
        target=charges,
        key=st.sampled_from([f"k{i}" for i in range(8)]),
        amount=st.integers(0, 25),
        meter=st.sampled_from(METERS[1:]),
        exclude=st.sampled_from(EXCLUDES),
    )
    def usage(self, key: str, amount: int, meter: str, exclude: frozenset[str]) -> Any:
        h = request_hash({"meter": meter, "amount": amount})
        prior = self.usage_keys.get(key)
        if prior is not None:
            before = snapshot(self.ws)
            if prior[0] != h:
                with pytest.raises(IdempotencyConflict):
                    check_replay(prior[0], h, key)
            else:
                check_replay(prior[0], h, key)
                replay = prior[1]  # the first result, nothing charged
                assert replay["key"] == key
            assert snapshot(self.ws) == before
            return multiple()
        op = self._id("evt")
        d = self._draw(amount, kind="debit", op=op, meter=meter, exclude=exclude)
        if d is None:
            return multiple()  # a failed charge stores nothing: the key may be retried
        self.charged[key] = self.charged.get(key, 0) + 1
        self.usage_keys[key] = (h, {"key": key, "event_id": op, "charged": amount})
        c = Charge(op, amount)
        self.charge_by_op[op] = c
        return c

    # ---- holds ------------------------------------------------------------------------------
    @rule(
        target=holds,
        amount=st.integers(0, 25),
        meter=st.sampled_from(METERS),
        exclude=st.sampled_from(EXCLUDES),
    )
    def hold(self, amount: int, meter: str | None, exclude: frozenset[str]) -> Any:
        hid = self._id("hld")
        d = self._draw(amount, kind="hold", op=self._id("hop"), meter=meter, exclude=exclude, hold_id=hid)
        if d is None:
            return multiple()
        self.open_holds[hid] = d
        self.hold_meter[hid] = meter
        self.hold_expect[hid] = amount
        return hid

    def _give_back_hold(self, hid: str, expected: Draw, amount: int, op: str) -> None:
        """Like the service: return to the hold's grants, even expired ones; what cannot go back
        (its overdraft part was repaid meanwhile) becomes a new grant tied to the hold."""
        held = drawn_from_journal(self.ws, hold_id=hid)
        assert held == expected, "the journal of an open hold is exactly what it drew"
        bal = self.ws.balance(self.now)
        _, unplaced = self.ws.give_back(
            held, amount, self.now, kind="release", operation_id=op, hold_id=hid, live_only=False
        )
        self.op_net[op] = self.op_net.get(op, 0) + amount - unplaced
        if unplaced:
            self._grant(unplaced, "refund", op=op, hold_id=hid)
        # credits going back to expired grants do not show in the balance
        assert self.ws.balance(self.now) <= bal + amount

    @rule(hid=consumes(holds), less=st.integers(0, 30), more=st.booleans())
    def settle(self, hid: str, less: int, more: bool) -> None:
        held = self.open_holds.pop(hid)
        op = self._id("sop")
        if more:
            final = held.total + less
            extra = (
                self._draw(
                    final - held.total,
                    kind="debit",
                    op=op,
                    meter=self.hold_meter[hid],
                    exclude=frozenset(),
                    hold_id=hid,
                )
                if final > held.total
                else Draw(())
            )
            if extra is None:  # 402: the hold stays open, nothing changed
                self.open_holds[hid] = held
                return
            merge_draws(held, extra)
        else:
            final = max(0, held.total - less)
            self._give_back_hold(hid, held, held.total - final, op)
        self.hold_expect[hid] = final
        c = Charge(op, final, hold_id=hid)
        self.charge_by_op[op] = c

    @rule(hid=consumes(holds))
    def release(self, hid: str) -> None:
        held = self.open_holds.pop(hid)
        self._give_back_hold(hid, held, held.total, self._id("rop"))
        self.hold_expect[hid] = 0

    # ---- refunds ------------------------------------------------------------------------------
    @rule(
        key=st.sampled_from([f"r{i}" for i in range(6)]),
        charge_op=st.data(),
        part=st.one_of(st.none(), st.integers(1, 30)),
    )
    def refund(self, key: str, charge_op: st.DataObject, part: int | None) -> None:
        if not self.charge_by_op:
            return
        op_id = charge_op.draw(st.sampled_from(sorted(self.charge_by_op)))
        c = self.charge_by_op[op_id]
        h = request_hash({"operation_id": op_id, "amount": part})
        before = snapshot(self.ws)
        prior = self.refund_keys.get(key)
        if prior is not None:
            if prior[0] != h:
                with pytest.raises(IdempotencyConflict):
                    check_replay(prior[0], h, key)
            else:
                check_replay(prior[0], h, key)
            assert snapshot(self.ws) == before
            return
        refundable = c.amount - c.refunded
        want = refundable if part is None else part
        if want <= 0 or want > refundable:
            return  # the service answers 409 before touching the wallet
        drawn = (
            drawn_from_journal(self.ws, hold_id=c.hold_id)
            if c.hold_id
            else drawn_from_journal(self.ws, operation_id=c.op_id)
        )
        left = subtract_draws(drawn, c.attributions)
        assert left.total >= refundable, "what is left to attribute covers what is left to refund"
        ref = self._id("ref")
        bal = self.ws.balance(self.now)
        attribution, unplaced = self.ws.give_back(
            left, want, self.now, kind="refund", operation_id=ref, live_only=True
        )
        assert attribution.total == want
        self.op_net[ref] = want - unplaced
        if unplaced:
            self._grant(unplaced, "refund", op=ref)
        assert self.ws.balance(self.now) == bal + want, "a refund adds exactly its amount to the balance"
        c.refunded += want
        c.attributions.append(attribution)
        self.refund_keys[key] = (h, {"id": ref})

    # ---- time, expiry, overdraft ----------------------------------------------------------------
    @rule(hours=st.integers(1, 30))
    def advance(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule()
    def sweep(self) -> None:
        op = self._id("exp")
        gone = self.ws.expire(self.now, operation_id=op)
        self.op_net[op] = -sum(a for _, a in gone)
        for gid, amt in gone:
            g = self.ws.grants[gid]
            assert amt > 0 and g.remaining == 0 and g.expires_at is not None and g.expires_at <= self.now
        for g in self.ws.grants.values():
            if g.expires_at is not None and g.expires_at <= self.now:
                assert g.remaining == 0

    @rule(extra=st.integers(0, 20))
    def set_overdraft(self, extra: int) -> None:
        self.ws.overdraft_limit = self.ws.overdraft_used + extra

    @precondition(
        lambda self: any(g.source == "plan_allowance" and g.remaining > 0 for g in self.ws.grants.values())
    )
    @rule()
    def close_allowance(self) -> None:
        op = self._id("op")
        total = 0
        for g in list(self.ws.grants.values()):
            if g.source == "plan_allowance" and g.remaining > 0:
                total += self.ws.close(g.id, kind="plan_change", operation_id=op)
        self.op_net[op] = -total

    # ---- invariants --------------------------------------------------------------------------
    @invariant()
    def balances_agree_with_journal(self) -> None:
        ws = self.ws
        ws.check()
        assert ws.balance(self.now) >= -ws.overdraft_limit
        assert 0 <= ws.overdraft_used <= ws.overdraft_limit
        per_grant: dict[str | None, int] = {}
        for e in ws.entries:
            per_grant[e.grant_id] = per_grant.get(e.grant_id, 0) + e.delta
        for gid, g in ws.grants.items():
            assert g.remaining == per_grant.get(gid, 0)
            assert 0 <= g.remaining <= g.amount
            granted = sum(e.delta for e in ws.entries if e.grant_id == gid and e.kind == "grant")
            assert granted == g.amount
        assert ws.overdraft_used == -per_grant.get(None, 0)
        assert set(per_grant) - {None} <= set(ws.grants)

    @invariant()
    def no_key_charged_twice(self) -> None:
        assert all(n == 1 for n in self.charged.values())

    @invariant()
    def holds_and_operations_agree(self) -> None:
        by_hold: dict[str, int] = {}
        by_op: dict[str, int] = {}
        for e in self.ws.entries:
            if e.hold_id:
                by_hold[e.hold_id] = by_hold.get(e.hold_id, 0) + e.delta
            by_op[e.operation_id] = by_op.get(e.operation_id, 0) + e.delta
        for hid, expect in self.hold_expect.items():
            assert -by_hold.get(hid, 0) == expect, f"hold {hid}"
        for op, net in self.op_net.items():
            assert by_op.get(op, 0) == net, f"operation {op}"


LedgerMachine.TestCase.settings = settings(
    deadline=None, max_examples=200, stateful_step_count=50, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerMachine = LedgerMachine.TestCase


# ------------------------------------------------------------------------------------------ plain properties
grant_specs = st.lists(
    st.tuples(
        st.integers(1, 50),  # amount
        st.integers(0, 5),  # priority
        st.one_of(st.none(), st.integers(1, 5)),  # expiry, hours
        st.integers(0, 3),  # created, minutes before now
    ),
    min_size=1,
    max_size=8,
)


@prop
@given(specs=grant_specs, amount=st.integers(0, 300), limit=st.integers(0, 20))
def test_draw_follows_spend_order_and_fails_atomically(
    specs: list[tuple[int, int, int | None, int]], amount: int, limit: int
) -> None:
    now = START + timedelta(days=1)
    ws = WalletState("w", overdraft_limit=limit)
    for i, (amt, prio, exp, age) in enumerate(specs):
        created = now - timedelta(minutes=age)
        ws.add_grant(
            GrantState(
                f"g{i:02d}",
                amt,
                0,
                "purchase",
                prio,
                created,
                None if exp is None else now + timedelta(hours=exp),
                created,
            ),
            now=now,
            operation_id=f"op{i}",
        )
    total = sum(s[0] for s in specs)
    before = copy.deepcopy(ws.grants)
    snap = snapshot(ws)
    if amount > total + limit:
        with pytest.raises(InsufficientCredits):
            ws.draw(amount, now, kind="debit", operation_id="d")
        assert snapshot(ws) == snap
        return
    d = ws.draw(amount, now, kind="debit", operation_id="d")
    check_spend_order(before, ws, d, now, None, frozenset())
    assert d.overdraft == max(0, amount - total)
    assert ws.balance(now) == total - amount


@prop
@given(
    amount=st.integers(1, 50), draws=st.lists(st.integers(1, 50), max_size=6), refund_part=st.integers(1, 50)
)
def test_refund_to_expired_grant_becomes_a_new_grant(amount: int, draws: list[int], refund_part: int) -> None:
    now = START
    ws = WalletState("w")
    ws.add_grant(
        GrantState("g1", amount, 0, "promo", 20, now, now + timedelta(hours=1), now),
        now=now,
        operation_id="op1",
    )
    ws.add_grant(GrantState("g2", 1000, 0, "purchase", 50, now, None, now), now=now, operation_id="op2")
    d = ws.draw(sum(draws) or 1, now, kind="debit", operation_id="evt")
    later = now + timedelta(hours=2)
    ws.expire(later, operation_id="exp")
    want = min(refund_part, d.total)
    bal = ws.balance(later)
    attribution, unplaced = ws.give_back(d, want, later, kind="refund", operation_id="ref", live_only=True)
    expired_share = sum(a for g, a in attribution.parts if g == "g1")
    assert unplaced == expired_share
    assert ws.grants["g1"].remaining == 0
    assert ws.balance(later) == bal + want - unplaced
