"""A debit in a wallet of many grants loads only the spend-order grants it takes (issue #6, item 6).

Charges read the wallet's grants with credits in spend order, a page at a time (an indexed query
that stops at its LIMIT), until what they read decides the draw; a wallet with few grants is read
whole by the first page, as before, and its debit runs as many statements as before. The balance
of a wallet read in part comes from its stored credit sum. These tests build a wallet of 300
grants (mixed priority, expiry and meter scope; some expired but not swept, one not in effect
yet, one closed) and check, for every draw (usage, hold, the extra drawn at settle), that it takes
exactly what the pure rule takes over the fully loaded wallet, that the balance returned is the
full computation, how many statements a debit runs, and that ``ledger verify`` checks the stored
sum and the ``has_credits`` flags.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, text

from tollkeep.catalog import parse_catalog
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.db import Tx
from tollkeep.kit.errors import InsufficientCredits
from tollkeep.kit.rawsql import RawStatement
from tollkeep.ledger import repository as repo
from tollkeep.ledger.context import LedgerContext
from tollkeep.ledger.domain import Draw, WalletState
from tollkeep.ledger.service import UsageRequest
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


def _full_state(s: Tx, wallet_id: str) -> WalletState:
    w = repo.lock_wallet(s, wallet_id)
    return repo.load_state(s, w)


def full_balance(tk: Tollkeep, cid: str) -> int:
    def fn(s: Tx) -> int:
        wid = repo.wallet_id_for_customer(s, cid)
        assert wid is not None
        return _full_state(s, wid).balance(tk.ledger.clock.now())

    return tk.executor.call(fn)


@pytest.fixture
def checked_draws(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Draw | None]]:
    """Every draw the service makes is checked against the pure rule over the fully loaded
    wallet (the grants of the database, plus those the operation added in memory)."""
    seen: list[tuple[int, Draw | None]] = []
    original = LedgerContext.draw

    def checked(s: Tx, st: WalletState, amount: int, now: datetime, **kw: Any) -> Draw:
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

    monkeypatch.setattr(LedgerContext, "draw", staticmethod(checked))
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
    tk.plans.change_plan(cid, "p")  # closes the free allowance grant: a closed grant
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


@pytest.fixture
def statements(tk: Tollkeep, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """SQL statements the ledger runs (prebuilt raw ones and any through SQLAlchemy), in order."""
    seen: list[str] = []
    original = RawStatement._run  # the fast path (the plain one goes through SQLAlchemy: below)

    def counted(self: RawStatement, fast: Any, params: Any) -> Any:
        seen.append(str(self.stmt).split("\n")[0])
        return original(self, fast, params)

    def before(conn: Any, cursor: Any, sql: str, *args: Any) -> None:
        if not sql.startswith("BEGIN"):  # SQLite's BEGIN IMMEDIATE: the transaction, not the command
            seen.append(sql.split("\n")[0])

    monkeypatch.setattr(RawStatement, "_run", counted)
    event.listen(tk.db.engine, "before_cursor_execute", before)
    yield seen
    event.remove(tk.db.engine, "before_cursor_execute", before)


def _packs(tk: Tollkeep, cid: str, n: int) -> None:
    far = START + timedelta(days=400)
    for i in range(n):
        expires = far + timedelta(minutes=i) if i % 2 else None
        tk.ledger.grant(cid, 1000, source="purchase", expires_at=expires, idempotency_key=f"p{i}")


def test_statements_per_debit_do_not_grow_with_the_grants(tk: Tollkeep, statements: list[str]) -> None:
    """Six statements for a wallet of one grant (lock and idempotency key, grants, operation,
    grant, journal, credit sum), as before the stored sum, and as many in a wallet of many: its
    balance is the stored sum while ``live_until`` says every grant with credits is live. On
    PostgreSQL the key look-up is a statement of its own, after the lock (see
    repository.lock_wallet_and_find_operation): one more, as many in a big wallet."""
    pg = 0 if tk.db.is_sqlite else 1
    small = tk.customers.create("small")["id"]
    big = tk.customers.create("big")["id"]
    _packs(tk, small, 1)
    _packs(tk, big, 200)
    counts = {}
    for cid in (small, big):
        tk.ledger.record_usage(UsageRequest(cid, "a", 1, "warm"))
        statements.clear()
        out = tk.ledger.record_usage(UsageRequest(cid, "a", 3, "u"))
        counts[cid] = len(statements)
        assert out["balance"] == full_balance(tk, cid)
    assert counts == {small: 6 + pg, big: 6 + pg}, statements
    # 2,500 (996 + 1000 + 504) needs more than the first page (2 grants): the next one (8) too;
    # the two grants it empties have their flag rewritten in a statement of their own
    statements.clear()
    tk.ledger.record_usage(UsageRequest(big, "a", 2_500, "three grants"))
    assert len(statements) == 8 + pg
    # 10,000 (504 + 9 x 1000 + 496) reads pages of 2, 8 and 32 grants
    statements.clear()
    tk.ledger.record_usage(UsageRequest(big, "a", 10_000, "eleven grants"))
    assert len(statements) == 9 + pg
    statements.clear()
    assert tk.ledger.record_usage(UsageRequest(big, "a", 3, "u"))["duplicate"]  # a replay
    assert len(statements) == 2 + pg  # lock and key, the first page


def test_live_until_follows_expiry_and_pending_grants(tk: Tollkeep, statements: list[str]) -> None:
    """The stored ``live_until`` spares a big wallet's debit the read of grants not live; it is
    lowered by a grant expiring sooner, cleared by one not in effect yet, read again (with the
    credits of grants not live) once passed, and checked by ``ledger verify``."""
    cid = tk.customers.create("c")["id"]
    _packs(tk, cid, 10)  # the first expiring one expires at START + 400 days + 1 minute
    clock = tk.ledger.clock
    assert isinstance(clock, FrozenClock)
    not_live = "SELECT (SELECT coalesce(sum(grants.remaining)"

    def debit(key: str) -> int:
        statements.clear()
        out = tk.ledger.record_usage(UsageRequest(cid, "a", 1, key))
        assert out["balance"] == full_balance(tk, cid)
        return sum(1 for q in statements if q.startswith(not_live))

    assert debit("first") == 0  # set by the balance of the grants already
    tk.ledger.grant(cid, 5, expires_at=START + timedelta(days=2), idempotency_key="soon")
    assert debit("before it expires") == 0
    clock.advance(timedelta(days=3))  # it expired, not swept: its 5 credits are not in the balance
    assert debit("after") == 1
    assert debit("after, again") == 1  # still there: read every time until swept
    tk.ledger.sweep()
    assert debit("swept") == 1
    assert debit("swept, again") == 0
    tk.ledger.grant(cid, 7, effective_at=clock.now() + timedelta(days=1), idempotency_key="later")
    assert debit("pending") == 1
    clock.advance(timedelta(days=2))
    assert debit("in effect") == 1
    assert debit("in effect, again") == 0
    assert tk.verify().ok
    wid = tk.executor.call(lambda s: repo.wallet_id_for_customer(s, cid))
    tk.executor.call(
        lambda s: s.execute(
            text("UPDATE wallets SET live_until = :t WHERE id = :w"), {"t": datetime(9000, 1, 1), "w": wid}
        )
    )
    assert any(f"wallet {wid}: live_until" in p for p in tk.verify().problems)
    tk.executor.call(
        lambda s: s.execute(text("UPDATE wallets SET live_until = NULL WHERE id = :w"), {"w": wid})
    )


def test_spent_grants_are_not_read(tk: Tollkeep) -> None:
    """A grant spent to 0 drops out of what a charge reads (``has_credits``), and comes back when
    credits return to it (a refund); ``ledger verify`` checks the flag."""
    cid = tk.customers.create("c")["id"]
    for i in range(30):
        tk.ledger.grant(cid, 2, idempotency_key=f"g{i}")
    charges = [tk.ledger.record_usage(UsageRequest(cid, "a", 2, f"u{i}")) for i in range(29)]

    def head() -> WalletState:
        def fn(s: Tx) -> WalletState:
            return repo.load_spend_head(s, repo.lock_wallet_of_customer(s, cid))

        return tk.executor.call(fn)

    st = head()
    assert not st.partial and len(st.grants) == 1
    tk.ledger.refund(charges[0]["event_id"], idempotency_key="r")
    st = head()
    assert len(st.grants) == 2
    assert tk.verify().ok
    gid = next(iter(st.grants))
    tk.executor.call(
        lambda s: s.execute(text("UPDATE grants SET has_credits = :f WHERE id = :g"), {"f": False, "g": gid})
    )
    assert any(f"grant {gid}: has_credits False but remaining 2" in p for p in tk.verify().problems)
    tk.executor.call(
        lambda s: s.execute(text("UPDATE grants SET has_credits = :f WHERE id = :g"), {"f": True, "g": gid})
    )


def test_migration_0007_backfills_the_credit_sum_and_flags(bare_db_url: str) -> None:
    from tollkeep.kit.db import Database
    from tollkeep.kit.migrate import upgrade

    db = Database(bare_db_url)
    try:
        assert upgrade(db, "0006") == "0006"
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
            flags = conn.execute(text("SELECT id, has_credits FROM grants ORDER BY id")).all()
            assert [(g, bool(f)) for g, f in flags] == [("grt_1", True), ("grt_2", True), ("grt_3", False)]
    finally:
        db.engine.dispose()
