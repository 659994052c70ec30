"""Several workers sweeping one database share the work: each expired hold is released once and
each wallet's grants expire once, whoever gets there first; on PostgreSQL a wallet another
transaction holds is skipped (FOR UPDATE SKIP LOCKED), not waited for, and swept on the next run."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pytest
from sqlalchemy import text

from tests.factories import second_runtime
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep

CUSTOMERS = 12
HOLDS_EACH = 4


def expired_work(tk: Tollkeep, clock: FrozenClock) -> list[str]:
    """Customers with holds past their TTL and a promo grant past its end."""
    cids = []
    for i in range(CUSTOMERS):
        cid = str(tk.customers.create(f"swept-{i}")["id"])
        tk.ledger.grant(cid, 100, idempotency_key="buy")
        tk.ledger.grant(  # spent last: the holds draw on the purchase
            cid,
            5,
            source="promo",
            idempotency_key="promo",
            priority=100,
            expires_at=clock.now() + timedelta(minutes=1),
        )
        for h in range(HOLDS_EACH):
            tk.ledger.create_hold(cid, idempotency_key=f"h{h}", amount=3, ttl_seconds=30)
        cids.append(cid)
    clock.advance(timedelta(minutes=2))
    return cids


def test_two_sweepers_at_once_release_each_hold_once(tk: Tollkeep, db_url: str, clock: FrozenClock) -> None:
    cids = expired_work(tk, clock)
    totals: list[dict[str, int]] = []
    lock = threading.Lock()
    with second_runtime(db_url, clock) as other:
        start = threading.Barrier(4)

        def sweep(rt: Tollkeep) -> None:
            start.wait()
            out = rt.ledger.sweep()
            with lock:
                totals.append(out)

        threads = [threading.Thread(target=sweep, args=(rt,)) for rt in (tk, other, tk, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # what a busy wallet made a sweeper skip is swept by the next run
        rest = tk.ledger.sweep()
    released = sum(t["holds_released"] for t in totals) + rest["holds_released"]
    expired = sum(t["grants_expired"] for t in totals) + rest["grants_expired"]
    assert released == CUSTOMERS * HOLDS_EACH, "a hold was released twice, or never"
    assert expired == CUSTOMERS, "a grant was expired twice, or never"
    assert tk.ledger.sweep() == {"holds_released": 0, "grants_expired": 0}
    for cid in cids:
        assert tk.balance(cid)["balance"] == 100


@contextmanager
def wallet_locked_elsewhere(tk: Tollkeep, cid: str, *, at_most: float = 10.0) -> Iterator[None]:
    """Another transaction (another worker, a charge in flight) holding the wallet's row lock,
    for at most ``at_most`` seconds (so a sweeper that waits fails the test instead of hanging)."""
    conn = tk.db.engine.connect()
    trans = conn.begin()
    conn.execute(text("SELECT id FROM wallets WHERE customer_id = :cid FOR UPDATE"), {"cid": cid})
    done = threading.Lock()

    def release() -> None:
        if done.acquire(blocking=False):
            trans.rollback()
            conn.close()

    timer = threading.Timer(at_most, release)
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        release()


def test_a_busy_wallet_is_skipped_not_waited_for(tk: Tollkeep, clock: FrozenClock) -> None:
    if tk.db.is_sqlite:
        pytest.skip("PostgreSQL row locks (SQLite has one writer)")
    cid = str(tk.customers.create("busy")["id"])
    tk.ledger.grant(cid, 10, idempotency_key="buy")
    tk.ledger.grant(
        cid,
        5,
        source="promo",
        idempotency_key="promo",
        priority=100,
        expires_at=clock.now() + timedelta(minutes=1),
    )
    tk.ledger.create_hold(cid, idempotency_key="h", amount=3, ttl_seconds=30)
    clock.advance(timedelta(minutes=2))
    with wallet_locked_elsewhere(tk, cid):
        started = time.monotonic()
        assert tk.ledger.sweep() == {"holds_released": 0, "grants_expired": 0}
        assert time.monotonic() - started < 5, "the sweeper waited on the lock"
    assert tk.ledger.sweep() == {"holds_released": 1, "grants_expired": 1}
    assert tk.balance(cid)["balance"] == 10
