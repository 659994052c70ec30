"""A debit in a wallet of many grants loads only the spend-order grants it takes (issue #6, item 6).

Charges read a prefix of the usable grants in spend order (an indexed query that stops once the
amount is covered) and the balance from the wallet's stored credit sum. These tests build a
wallet of 300 grants (mixed priority, expiry and meter scope; some expired but not swept, one not
in effect yet, one closed) and check, for every draw (usage, hold, the extra drawn at settle), that
it takes exactly what the pure rule takes over the fully loaded wallet, that the balance returned
is the full computation, and that ``ledger verify`` checks the stored sum.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import InsufficientCredits
from tollkeep.ledger import repository as repo
from tollkeep.ledger.domain import Draw, WalletState
from tollkeep.ledger.service import LedgerService, UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

CATALOG = """
[meters.a]
aggregation = "sum"
[meters.a.price]
model = "per_unit"
unit_price = 1
per = 1
[meters.b]
aggregation = "sum"
[meters.b.price]
model = "per_unit"
unit_price = 1
per = 1
[plans.free]
name = "Free"
[plans.free.allowance]
amount = 30
period = "month"
[plans.p]
name = "P"
[plans.p.allowance]
amount = 60
period = "month"
[[plans.p.caps]]
meter = "a"
limit = 40
period = "month"
mode = "allowance"
"""

START = datetime(2026, 5, 10, 12, tzinfo=UTC)


@pytest.fixture
def tk(db_url: str) -> Iterator[Tollkeep]:
    runtime = Tollkeep(make_settings(db_url), clock=FrozenClock(START))
    runtime.catalogs.set(parse_catalog(CATALOG))
    try:
        yield runtime
        report = runtime.verify()
        assert report.ok, report.problems
    finally:
        runtime.close()


def _full_state(s: Session, wallet_id: str) -> WalletState:
    w = repo.lock_wallet(s, wallet_id)
    return repo.load_state(s, w)


def full_balance(tk: Tollkeep, cid: str) -> int:
    def fn(s: Session) -> int:
        wid = repo.wallet_id_for_customer(s, cid)
        assert wid is not None
        return _full_state(s, wid).balance(tk.ledger.clock.now())

    return tk.executor.call(fn)


@pytest.fixture
def checked_draws(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Draw | None]]:
    """Every draw the service makes is checked against the pure rule over the fully loaded
    wallet (the grants of the database, plus those the operation added in memory)."""
    seen: list[tuple[int, Draw | None]] = []
    original = LedgerService._draw

    def checked(s: Session, st: WalletState, amount: int, now: datetime, **kw: Any) -> Draw:
        assert st.partial
        full = _full_state(s, st.wallet_id)
        for gid in st.new_grants:
            full.grants[gid] = st.grants[gid]
        expected: Draw | InsufficientCredits
        try:
            expected = full.plan_draw(
                amount, now, meter=kw.get("meter"), exclude=kw.get("exclude", frozenset())
            )
        except InsufficientCredits as exc:
            expected = exc
        try:
            got = original(s, st, amount, now, **kw)
        except InsufficientCredits as exc:
            assert isinstance(expected, InsufficientCredits), (amount, expected)
            assert exc.details == expected.details
            seen.append((amount, None))
            raise
        assert not isinstance(expected, InsufficientCredits), (amount, got)
        assert got == expected
        # only a prefix was read: no more than the grants the draw takes plus a page of each stream
        if len(full.grants) > 200 and amount < 100:
            assert len(st.grants) < len(full.grants) // 2
        seen.append((amount, got))
        return got

    monkeypatch.setattr(LedgerService, "_draw", staticmethod(checked))
    return seen


def big_wallet(tk: Tollkeep, rng: random.Random, n: int = 300) -> str:
    cid: str = tk.customers.create("big", plan="free")["id"]
    clock = tk.ledger.clock
    assert isinstance(clock, FrozenClock)
    for i in range(n):
        now = clock.advance(timedelta(seconds=rng.choice([0, 0, 1, 7, 30])))  # ages differ, some tie
        r = rng.random()
        if r < 0.15:
            expires: datetime | None = now + timedelta(minutes=rng.randint(1, 90))  # expired by the checks
        elif r < 0.6:
            expires = now + timedelta(days=rng.randint(1, 20), minutes=rng.randint(0, 59))
        else:
            expires = None
        tk.ledger.grant(
            cid,
            rng.randint(1, 12),
            source=rng.choice(["purchase", "promo", "adjustment", "refund"]),
            priority=rng.choice([None, 5, 20, 20, 50]),
            expires_at=expires,
            meter=rng.choice([None, None, None, "a", "b"]),
            idempotency_key=f"g{i}",
        )
    now = clock.now()
    tk.ledger.grant(cid, 500, effective_at=now + timedelta(days=30), priority=1, idempotency_key="future")
    tk.ledger.change_plan(cid, "p")  # closes the free allowance grant: a closed grant
    return cid


def test_draws_in_a_big_wallet_take_what_a_full_load_takes(
    tk: Tollkeep, checked_draws: list[tuple[int, Draw | None]]
) -> None:
    rng = random.Random(6)
    cid = big_wallet(tk, rng)
    clock = tk.ledger.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(hours=2))  # some grants have expired, unswept
    assert tk.verify().ok
    open_holds: list[str] = []
    for step in range(120):
        kind = rng.random()
        meter = rng.choice(["a", "b"])
        qty = rng.choice([1, 2, 3, 5, 8, 20, 60, 150, 400])
        try:
            if kind < 0.55:
                out = tk.ledger.record_usage(UsageRequest(cid, meter, qty, f"u{step}"))
            elif kind < 0.8 or not open_holds:
                out = tk.ledger.create_hold(
                    cid, idempotency_key=f"h{step}", meter=meter, quantity=qty, ttl_seconds=3600
                )
                open_holds.append(out["id"])
            else:
                hold = open_holds.pop(rng.randrange(len(open_holds)))
                action = rng.choice(["settle", "release"])
                out = tk.ledger.resolve_hold(
                    cid,
                    hold,
                    action=action,
                    amount=rng.choice([0, 3, 30, 90]) if action == "settle" else None,
                )
        except InsufficientCredits:
            continue
        assert out["balance"] == full_balance(tk, cid), step
        if step % 40 == 39:
            clock.advance(timedelta(days=3))  # more grants expire, unswept, then swept
            open_holds.clear()  # expired: released by the sweep (or left open, past their end)
            if step == 79:
                tk.ledger.sweep()
    assert any(d is not None and len(d.parts) > 16 for _, d in checked_draws), "a draw spanning pages"
    assert any(d is None for _, d in checked_draws), "a 402"
    assert any(d is not None and d.overdraft == 0 and d.parts for _, d in checked_draws)
    assert tk.verify().ok


def test_overdraft_draw_loads_every_usable_grant(
    tk: Tollkeep, checked_draws: list[tuple[int, Draw | None]]
) -> None:
    rng = random.Random(7)
    cid = big_wallet(tk, rng, n=60)
    tk.ledger.set_overdraft(cid, 10_000)
    out = tk.ledger.record_usage(UsageRequest(cid, "a", 2_000, "big"))
    assert out["balance"] == full_balance(tk, cid)
    (_, draw), *_ = checked_draws
    assert draw is not None and draw.overdraft > 0
    again = tk.ledger.record_usage(UsageRequest(cid, "a", 2_000, "big"))
    assert again["duplicate"] and again["balance"] == out["balance"]


def test_balance_of_grant_refund_and_sweep(
    tk: Tollkeep, checked_draws: list[tuple[int, Draw | None]]
) -> None:
    rng = random.Random(8)
    cid = big_wallet(tk, rng, n=40)
    clock = tk.ledger.clock
    assert isinstance(clock, FrozenClock)
    clock.advance(timedelta(hours=2))
    charge = tk.ledger.record_usage(UsageRequest(cid, "b", 25, "c"))
    clock.advance(timedelta(days=5))
    out = tk.ledger.refund(charge["event_id"], idempotency_key="r")
    assert out["balance"] == full_balance(tk, cid)
    out = tk.ledger.grant(cid, 7, idempotency_key="late")
    assert out["balance"] == full_balance(tk, cid)
    tk.ledger.sweep()
    out = tk.ledger.record_usage(UsageRequest(cid, "b", 1, "d"))
    assert out["balance"] == full_balance(tk, cid)


def test_verify_checks_the_stored_credit_sum(tk: Tollkeep) -> None:
    cid = tk.customers.create("a", plan="free")["id"]
    tk.ledger.grant(cid, 10, idempotency_key="g")
    tk.ledger.record_usage(UsageRequest(cid, "a", 3, "u"))
    assert tk.verify().ok
    wid = tk.executor.call(lambda s: repo.wallet_id_for_customer(s, cid))
    tk.executor.call(
        lambda s: s.execute(text("UPDATE wallets SET credits = credits + 1 WHERE id = :w"), {"w": wid})
    )
    found = tk.verify().problems
    assert any(
        f"wallet {wid}: credits 38 but its grants hold 37 and the journal sums to 37" in p for p in found
    )
    tk.executor.call(
        lambda s: s.execute(text("UPDATE wallets SET credits = credits - 1 WHERE id = :w"), {"w": wid})
    )


def test_migration_0004_backfills_the_credit_sum(db_url: str) -> None:
    from tollkeep.kit.db import Database
    from tollkeep.kit.migrate import upgrade

    db = Database(db_url)
    try:
        assert upgrade(db, "0003") == "0003"
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO customers (id, external_id, status, anonymous, metadata, created_at, "
                    "updated_at) VALUES ('cus_1', 'one', 'active', false, '{}', '2026-05-01', '2026-05-01')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO wallets (id, customer_id, overdraft_limit, overdraft_used, "
                    "carryover_done, created_at, updated_at) "
                    "VALUES ('wal_1', 'cus_1', 0, 0, false, '2026-05-01', '2026-05-01')"
                )
            )
            for gid, amount, remaining in (("grt_1", 10, 4), ("grt_2", 7, 7), ("grt_3", 5, 0)):
                conn.execute(
                    text(
                        "INSERT INTO grants (id, wallet_id, amount, remaining, source, priority, "
                        "effective_at, operation_id, created_at) VALUES "
                        "(:g, 'wal_1', :a, :r, 'purchase', 50, '2026-05-01', 'op_1', '2026-05-01')"
                    ),
                    {"g": gid, "a": amount, "r": remaining},
                )
        upgrade(db)
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT credits FROM wallets WHERE id = 'wal_1'")).scalar_one() == 11
    finally:
        db.engine.dispose()
