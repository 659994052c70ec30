"""Property tests of the pure ledger rules (no database): random sequences of grants, debits,
holds, settles, releases, refunds, plan-change closes, expiries and overdraft changes.

They drive the REAL rules — :class:`WalletState` (``add_grant``, ``draw``, ``give_back``,
``close``, ``expire``), :func:`take_back`, :func:`request_hash` / :func:`check_replay`, and the
use cases' pure rules of ``ledger/rules.py`` (``give_back_hold``, ``refund_left``,
``give_back_refund``, ``new_grant``), the very functions the service calls — and compare every
outcome with the independent model of ledger_model.py: each grant's credits, the overdraft, the
refund attribution (``==``, not ``>=``), closed grants staying out of use, and a conservation law
over the in-memory journal.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from tollkeep.kit.errors import IdempotencyConflict, InsufficientCredits, InvalidInput
from tollkeep.ledger.domain import (
    Draw,
    GrantState,
    WalletState,
    check_replay,
    request_hash,
    subtract_draws,
    take_back,
)
from tollkeep.ledger.rules import give_back_hold, give_back_refund, refund_left

from .ledger_model import MOVES, PRIORITY, Insufficient, MCharge, MHold, Model, Parts, merged, minus

START = datetime(2026, 1, 1, tzinfo=UTC)
SOURCES = ("plan_allowance", "purchase", "promo", "refund", "adjustment")

prop = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])


def close_grant(ws: WalletState, gid: str, now: datetime, op: str) -> int:
    return ws.close(gid, now, kind="plan_change", operation_id=op)


def as_draw(parts: Parts) -> Draw:
    return Draw(tuple((k, a) for k, a in parts if k is not None), sum(a for k, a in parts if k is None))


def domain_revives_closed_grants() -> bool:
    """Issue 5 bug 2 in the rules: a closed allowance drawn by a hold, released, was live again."""
    now = START
    ws = WalletState("w")
    ws.add_grant(
        GrantState("a", 20, 0, "plan_allowance", 10, now, now + timedelta(days=30), now),
        now=now,
        operation_id="g",
    )
    held = ws.draw(18, now, kind="hold", operation_id="h", hold_id="hld")
    close_grant(ws, "a", now, "close")
    give_back_hold(ws, {}, held, 18, now, operation_id="r", hold_id="hld")
    return ws.balance(now) != 0


# ------------------------------------------------------------------------------------------ machine
class LedgerRulesMachine(RuleBasedStateMachine):
    @initialize(limit=st.integers(0, 30))
    def setup(self, limit: int) -> None:
        self.ws = WalletState("wal_test", overdraft_limit=limit)
        self.m = Model(now=START, od_limit=limit)
        self.seq = 0
        self.meta: dict[str, dict[str, Any]] = {}
        self.usage_keys: dict[str, tuple[dict[str, Any], str]] = {}  # key -> (first payload, its hash)
        self.charged: dict[str, int] = {}
        self.hold_draws: dict[str, Draw] = {}
        self.charge_draws: dict[str, Draw] = {}  # what each charge took, as the journal folds it
        self.refunds: dict[str, list[tuple[int, Draw]]] = {}  # each refund's amount and attribution
        self.hold_expect: dict[str, int] = {}

    def _id(self, prefix: str) -> str:
        self.seq += 1
        return f"{prefix}_{self.seq:06d}"

    def bind(self) -> None:
        """The grants the rules created this step are the ones the model predicted, in order."""
        made = list(self.ws.new_grants)
        self.ws.new_grants.clear()
        assert len(made) == len(self.m.new), (
            f"rules made {len(made)} grants, model expected {len(self.m.new)}"
        )
        for gid, key in zip(made, self.m.new, strict=True):
            g, mg = self.ws.grants[gid], self.m.grants.pop(key)
            assert (g.source, g.amount, g.priority, g.expires_at, g.meter) == (
                mg.source,
                mg.amount,
                mg.priority,
                mg.expires_at,
                mg.meter,
            )
            mg.key = gid
            self.m.grants[gid] = mg
            for h in self.m.holds.values():
                h.parts = [(gid if k == key else k, a) for k, a in h.parts]
            for c in self.m.charges.values():
                c.parts = [(gid if k == key else k, a) for k, a in c.parts]
        self.m.new = []

    # ---- grants
    @rule(
        amount=st.integers(1, 40),
        source=st.sampled_from(SOURCES),
        priority=st.one_of(st.none(), st.integers(0, 60)),
        expires=st.one_of(st.none(), st.integers(1, 72)),
        later=st.sampled_from([0, 0, 5]),
        meter=st.sampled_from([None, "a", "b"]),
    )
    def grant(
        self,
        amount: int,
        source: str,
        priority: int | None,
        expires: int | None,
        later: int,
        meter: str | None,
    ) -> None:
        eff = self.m.now + timedelta(hours=later)
        exp = None if expires is None else eff + timedelta(hours=expires)
        prio = PRIORITY[source] if priority is None else priority
        self.m.add_grant(amount, source, priority=prio, effective_at=eff, expires_at=exp, meter=meter)
        self.m.external += amount
        g = GrantState(self._id("grt"), amount, 0, source, prio, eff, exp, self.m.now, meter)
        self.ws.add_grant(g, now=self.m.now, operation_id=self._id("op"))
        self.bind()

    @rule(amount=st.integers(-3, 0))
    def bad_grant(self, amount: int) -> None:
        before = copy.deepcopy(self.ws)
        with pytest.raises(InvalidInput):
            self.ws.add_grant(
                GrantState(self._id("grt"), amount, 0, "purchase", 50, self.m.now, None, self.m.now),
                now=self.m.now,
                operation_id=self._id("op"),
            )
        assert self.ws == before

    # ---- debits, with idempotency by the real fingerprint
    @rule(
        key=st.sampled_from([f"k{i}" for i in range(6)]),
        amount=st.integers(0, 25),
        meter=st.sampled_from(["a", "b"]),
        props=st.sampled_from([None, {"x": 1}, {"x": 2}, {"x": 1, "y": "z"}]),
    )
    def usage(self, key: str, amount: int, meter: str, props: dict[str, Any] | None) -> None:
        payload = {"meter": meter, "quantity": amount, "properties": props or {}}
        h = request_hash(dict(reversed(list(payload.items()))))  # key order must not matter
        if key in self.usage_keys:
            first, first_hash = self.usage_keys[key]
            before = copy.deepcopy(self.ws)
            if first == payload:
                check_replay(first_hash, h, key)  # the same request replays
            else:
                with pytest.raises(IdempotencyConflict):  # any other request is refused
                    check_replay(first_hash, h, key)
            assert self.ws == before
            return
        op = self._id("evt")
        expected = self._model_draw(amount, meter)
        before = copy.deepcopy(self.ws)
        try:
            d = self.ws.draw(amount, self.m.now, kind="debit", operation_id=op, meter=meter)
        except InsufficientCredits as exc:
            assert expected is None, "the rules refused a debit the model can cover"
            assert self.ws == before, "a failed draw changed the wallet"
            assert exc.details["required"] == amount
            return
        assert expected is not None, "the rules drew more than the wallet holds"
        assert d == as_draw(expected), "not drawn in spend order"
        self.usage_keys[key] = (payload, h)
        self.charged[key] = self.charged.get(key, 0) + 1
        self.m.charges[op] = MCharge(op, amount, self.m.now, expected)
        self.charge_draws[op] = d

    def _model_draw(self, amount: int, meter: str | None) -> Parts | None:
        saved = copy.deepcopy(self.m)
        try:
            return self.m.draw(amount, meter)
        except Insufficient:
            self.m = saved
            return None

    # ---- holds
    @rule(amount=st.integers(0, 25), meter=st.sampled_from([None, "a", "b"]))
    def hold(self, amount: int, meter: str | None) -> None:
        hid = self._id("hld")
        expected = self._model_draw(amount, meter)
        try:
            d = self.ws.draw(
                amount, self.m.now, kind="hold", operation_id=self._id("hop"), hold_id=hid, meter=meter
            )
        except InsufficientCredits:
            assert expected is None
            return
        assert expected is not None and d == as_draw(expected)
        self.m.holds[hid] = MHold(hid, amount, meter, None, self.m.now + timedelta(days=365), expected)
        self.hold_draws[hid] = d
        self.hold_expect[hid] = amount

    def _open(self) -> list[str]:
        return sorted(h for h, mh in self.m.holds.items() if mh.status == "open")

    @precondition(lambda self: bool(self._open()))
    @rule(pick=st.integers(0, 100), delta=st.integers(0, 20), more=st.booleans())
    def settle(self, pick: int, delta: int, more: bool) -> None:
        hid = self._open()[pick % len(self._open())]
        h = self.m.holds[hid]
        held = self.hold_draws[hid]
        op = self._id("sop")
        final = h.amount + delta if more else max(0, h.amount - delta)
        if final > h.amount:
            extra = self._model_draw(final - h.amount, h.meter)
            try:
                d = self.ws.draw(
                    final - h.amount, self.m.now, kind="debit", operation_id=op, hold_id=hid, meter=h.meter
                )
            except InsufficientCredits:
                assert extra is None
                return  # 402: the hold stays open
            assert extra is not None and d == as_draw(extra)
            charge = merged(h.parts, extra)
        else:
            taken, _ = self.m.give_back(h.parts, h.amount - final, to_dead=True)
            back = give_back_hold(
                self.ws, self.meta, held, h.amount - final, self.m.now, operation_id=op, hold_id=hid
            )
            self.bind()
            assert back.returned == as_draw(taken) and back.returned == take_back(held, h.amount - final)
            charge = minus(h.parts, taken)
        h.status = "settled"
        self.hold_expect[hid] = final
        self.m.charges[op] = MCharge(op, final, self.m.now, charge, hold_id=hid)
        self.charge_draws[op] = as_draw(charge)

    @precondition(lambda self: bool(self._open()))
    @rule(pick=st.integers(0, 100))
    def release(self, pick: int) -> None:
        hid = self._open()[pick % len(self._open())]
        h = self.m.holds[hid]
        taken, od_unplaced = self.m.give_back(h.parts, h.amount, to_dead=True)
        back = give_back_hold(
            self.ws,
            self.meta,
            self.hold_draws[hid],
            h.amount,
            self.m.now,
            operation_id=self._id("rop"),
            hold_id=hid,
        )
        self.bind()
        assert back.returned == as_draw(taken)
        assert back.unplaced == od_unplaced, "only a repaid overdraft part comes back as a new grant"
        h.status = "released"
        self.hold_expect[hid] = 0

    # ---- refunds
    @precondition(lambda self: bool(self.m.charges))
    @rule(pick=st.integers(0, 100), part=st.one_of(st.none(), st.integers(1, 30)))
    def refund(self, pick: int, part: int | None) -> None:
        op_id = sorted(self.m.charges)[pick % len(self.m.charges)]
        c = self.m.charges[op_id]
        refundable = c.amount - c.refunded
        want = refundable if part is None else part
        if want <= 0 or want > refundable:
            return  # the service answers 409 before touching the wallet
        # what is left to attribute, by the real rule: from what the charge took and the amounts
        # of its earlier refunds alone; the attributions they recorded (older versions kept them
        # in the replay cache) say the same
        earlier = self.refunds.get(op_id, [])
        left = refund_left(self.charge_draws[op_id], [(a, None) for a, _ in earlier])
        assert left == refund_left(self.charge_draws[op_id], earlier)
        assert left.total == refundable, "what is left to attribute is what is left to refund"
        assert sorted(left.parts) == sorted((k, a) for k, a in c.parts if k is not None)
        bal = self.ws.balance(self.m.now)
        taken, _ = self.m.give_back(c.parts, want, to_dead=False)
        back = give_back_refund(self.ws, self.meta, left, want, self.m.now, operation_id=self._id("ref"))
        self.bind()
        assert back.returned.total == want
        assert self.ws.balance(self.m.now) == bal + want, "a refund adds exactly its amount to the balance"
        assert sorted(back.returned.parts) == sorted((k, a) for k, a in taken if k is not None)
        c.refunded += want
        c.parts = minus(c.parts, taken)
        self.refunds.setdefault(op_id, []).append((want, back.returned))

    # ---- time, expiry, overdraft, plan changes
    @rule(hours=st.integers(1, 30))
    def advance(self, hours: int) -> None:
        self.m.now += timedelta(hours=hours)

    @rule()
    def sweep(self) -> None:
        gone = self.ws.expire(self.m.now, operation_id=self._id("exp"))
        for gid, amt in gone:
            g = self.ws.grants[gid]
            assert amt > 0 and g.remaining == 0 and g.expires_at is not None and g.expires_at <= self.m.now
        for g in self.ws.grants.values():
            if g.expires_at is not None and g.expires_at <= self.m.now:
                assert g.remaining == 0

    @rule(limit=st.integers(0, 30))
    def set_overdraft(self, limit: int) -> None:
        self.ws.overdraft_limit = limit  # may be below what is used
        self.m.od_limit = limit

    @rule()
    def plan_change(self) -> None:
        """A plan change ends every live allowance grant for good (the service's rule)."""
        m = self.m
        closing = [g for g in m.grants.values() if g.source == "plan_allowance" and g.live(m.now)]
        op = self._id("op")
        for g in closing:
            g.closed = True
            assert close_grant(self.ws, g.key, m.now, op) == g.remaining

    # ---- invariants
    @invariant()
    def agrees_with_the_model(self) -> None:
        ws, m = self.ws, self.m
        ws.check()
        assert ws.overdraft_used == m.od_used
        live = {
            g.id: g.remaining
            for g in ws.grants.values()
            if g.live(m.now) and g.remaining and g.id not in self._closed()
        }
        assert live == {g.key: g.remaining for g in m.grants.values() if g.live(m.now) and g.remaining}
        for gid in self._closed():
            g = ws.grants[gid]
            assert g.remaining == 0 or not g.live(m.now), f"closed grant {gid} is in use again"
        assert ws.balance(m.now) == m.balance()
        assert ws.spendable(m.now, "a") == sum(
            g.remaining for g in m.grants.values() if g.live(m.now) and g.meter in (None, "a")
        )

    def _closed(self) -> set[str]:
        return {g.key for g in self.m.grants.values() if g.closed}

    @invariant()
    def journal_explains_everything(self) -> None:
        ws, m = self.ws, self.m
        per_grant: dict[str | None, int] = {}
        removed = 0
        by_hold: dict[str, int] = {}
        for e in ws.entries:
            per_grant[e.grant_id] = per_grant.get(e.grant_id, 0) + e.delta
            if e.grant_id is not None and e.kind not in MOVES:
                removed -= e.delta
            if e.hold_id:
                by_hold[e.hold_id] = by_hold.get(e.hold_id, 0) + e.delta
        for gid, g in ws.grants.items():
            assert g.remaining == per_grant.get(gid, 0)
            assert sum(e.delta for e in ws.entries if e.grant_id == gid and e.kind == "grant") == g.amount
        assert ws.overdraft_used == -per_grant.get(None, 0)
        for hid, expect in self.hold_expect.items():
            assert -by_hold.get(hid, 0) == expect, f"hold {hid}: its entries must take {expect}"
        # conservation: nothing is created or lost
        closed = self._closed()
        live = sum(g.remaining for g in ws.grants.values() if g.live(m.now) and g.id not in closed)
        dead = sum(g.remaining for g in ws.grants.values() if not g.live(m.now) or g.id in closed)
        charges = sum(c.amount for c in m.charges.values()) - sum(c.refunded for c in m.charges.values())
        assert live - ws.overdraft_used + dead + removed + m.held() + charges == m.external

    @invariant()
    def no_key_charged_twice(self) -> None:
        assert all(n == 1 for n in self.charged.values())


LedgerRulesMachine.TestCase.settings = settings(
    deadline=None, max_examples=150, stateful_step_count=50, suppress_health_check=[HealthCheck.too_slow]
)
TestLedgerRules = LedgerRulesMachine.TestCase


# ------------------------------------------------------------------------------------------ plain properties
@prop
@given(
    payload=st.fixed_dictionaries(
        {
            "meter": st.sampled_from(["a", "b"]),
            "quantity": st.integers(0, 5),
            "properties": st.dictionaries(st.sampled_from("xyz"), st.integers(0, 3), max_size=3),
        }
    ),
    other=st.fixed_dictionaries(
        {
            "meter": st.sampled_from(["a", "b"]),
            "quantity": st.integers(0, 5),
            "properties": st.dictionaries(st.sampled_from("xyz"), st.integers(0, 3), max_size=3),
        }
    ),
)
def test_fingerprint_tells_a_replay_from_a_key_reused(payload: dict[str, Any], other: dict[str, Any]) -> None:
    """Same request (whatever the key order) → the same fingerprint; any difference, including in
    the properties alone → another one, and check_replay refuses it."""
    shuffled = {
        k: dict(reversed(list(v.items()))) if isinstance(v, dict) else v for k, v in reversed(payload.items())
    }
    assert request_hash(shuffled) == request_hash(payload)
    check_replay(request_hash(payload), request_hash(shuffled), "k")
    if other != payload:
        assert request_hash(other) != request_hash(payload)
        with pytest.raises(IdempotencyConflict):
            check_replay(request_hash(payload), request_hash(other), "k")


grant_specs = st.lists(
    st.tuples(
        st.integers(1, 50), st.integers(0, 5), st.one_of(st.none(), st.integers(1, 5)), st.integers(0, 3)
    ),
    min_size=1,
    max_size=8,
)


@prop
@given(specs=grant_specs, amount=st.integers(0, 300), limit=st.integers(0, 20))
def test_draw_follows_the_model_and_fails_atomically(
    specs: list[tuple[int, int, int | None, int]], amount: int, limit: int
) -> None:
    now = START + timedelta(days=1)
    ws = WalletState("w", overdraft_limit=limit)
    m = Model(now=now, od_limit=limit)
    for i, (amt, prio, exp, age) in enumerate(specs):
        created = now - timedelta(minutes=age)
        expires = None if exp is None else now + timedelta(hours=exp)
        gid = f"g{i:02d}"
        ws.add_grant(
            GrantState(gid, amt, 0, "purchase", prio, created, expires, created),
            now=now,
            operation_id=f"op{i}",
        )
        m.now = created
        mg = m.add_grant(amt, "purchase", priority=prio, expires_at=expires)
        m.grants[gid] = m.grants.pop(mg.key)
        mg.key = gid
    m.now = now
    before = copy.deepcopy(ws)
    try:
        expected: Parts | None = m.draw(amount, None)
    except Insufficient:
        expected = None
    if expected is None:
        with pytest.raises(InsufficientCredits):
            ws.draw(amount, now, kind="debit", operation_id="d")
        assert ws == before
        return
    assert ws.draw(amount, now, kind="debit", operation_id="d") == as_draw(expected)
    assert ws.balance(now) == sum(s[0] for s in specs) - amount


@prop
@given(amount=st.integers(1, 50), spend=st.integers(1, 300), refund_part=st.integers(1, 50))
def test_refund_to_an_expired_grant_becomes_a_new_grant(amount: int, spend: int, refund_part: int) -> None:
    now = START
    ws = WalletState("w")
    ws.add_grant(
        GrantState("g1", amount, 0, "promo", 20, now, now + timedelta(hours=1), now),
        now=now,
        operation_id="op1",
    )
    ws.add_grant(GrantState("g2", 1000, 0, "purchase", 50, now, None, now), now=now, operation_id="op2")
    d = ws.draw(spend, now, kind="debit", operation_id="evt")
    later = now + timedelta(hours=1)  # the promo is dead at its exact expires_at
    ws.expire(later, operation_id="exp")
    want = min(refund_part, d.total)
    bal = ws.balance(later)
    attribution, unplaced = ws.give_back(d, want, later, kind="refund", operation_id="ref", live_only=True)
    assert attribution.total == want
    assert unplaced == sum(a for g, a in attribution.parts if g == "g1")
    assert ws.grants["g1"].remaining == 0
    assert ws.balance(later) == bal + want - unplaced
    assert ws.grants["g2"].remaining == 1000 - (spend - min(spend, amount)) + (want - unplaced)


@prop
@given(held=st.integers(1, 20), back=st.integers(0, 20), hours=st.integers(0, 3))
def test_releasing_to_an_ended_grant_never_raises_the_balance(held: int, back: int, hours: int) -> None:
    """A hold's credits given back after their grant expired (or was closed) stay out of use."""
    now = START
    ws = WalletState("w")
    ws.add_grant(
        GrantState("p", 20, 0, "promo", 20, now, now + timedelta(hours=1), now), now=now, operation_id="g"
    )
    d = ws.draw(held, now, kind="hold", operation_id="h", hold_id="hld")
    later = now + timedelta(hours=hours)
    bal = ws.balance(later)
    give_back_hold(ws, {}, d, min(back, held), later, operation_id="r", hold_id="hld")
    if hours >= 1:
        assert ws.balance(later) == bal, "credits came back to life after their grant expired"
    else:
        assert ws.balance(later) == bal + min(back, held)


def test_releasing_to_a_closed_grant_never_raises_the_balance() -> None:
    assert not domain_revives_closed_grants()


@prop
@given(specs=grant_specs, od=st.integers(0, 10), first=st.integers(0, 400), second=st.integers(0, 400))
def test_returns_add_up(
    specs: list[tuple[int, int, int | None, int]], od: int, first: int, second: int
) -> None:
    """take_back is the walk of give_back, and returns compose: taking ``a`` then ``b`` from what
    is left accounts for the same parts as ``a + b`` at once (so a refund's amount alone says
    which parts it accounted for)."""
    drawn = Draw(tuple((f"g{i}", amt) for i, (amt, *_rest) in enumerate(specs)), od)
    a = min(first, drawn.total)
    b = min(second, drawn.total - a)
    once = take_back(drawn, a + b)
    rest = subtract_draws(drawn, [take_back(drawn, a)])
    assert subtract_draws(rest, [take_back(rest, b)]) == subtract_draws(drawn, [once])
    assert once.total == a + b
    ws = WalletState("w", overdraft_limit=od, overdraft_used=od)
    for gid, amt in drawn.parts:
        ws.add_grant(GrantState(gid, amt, 0, "purchase", 50, START, None, START), now=START, operation_id="g")
    ws.overdraft_used = od  # the grants above repaid it: draw it again
    for gid, _ in drawn.parts:
        ws.grants[gid].remaining = 0
    returned, unplaced = ws.give_back(drawn, a + b, START, kind="refund", operation_id="r", live_only=True)
    assert returned == once and unplaced == 0
