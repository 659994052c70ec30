"""Races between two runtimes on one database (two Tollkeep instances on the same SQLite file or
PostgreSQL schema: two connection pools, two sets of writer lanes, as two server processes
would have). In-process threads of one runtime are serialised by the customer's lane and never
reach the database's row lock; two runtimes do.

Each runtime submits its commands for every hold (or charge) at once, so each batches them into
one transaction: the second runtime reads a hold as open while the first still holds the
wallet's lock, and must re-read it under the lock. For every hold exactly one resolution wins;
the others get a clean conflict (409) or replay the winner (``duplicate``); the ledger verifies
and no credit is created or lost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import Conflict
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

HOLDS = 24
START = 1000


@pytest.fixture
def other(tk: Tollkeep, db_url: str, clock: FrozenClock) -> Iterator[Tollkeep]:
    """A second runtime on the same database (and clock)."""
    rt = Tollkeep(make_settings(db_url), clock=clock)
    try:
        yield rt
    finally:
        rt.close()


def outcome(f: Future[Any]) -> Any:
    try:
        return f.result(timeout=60)
    except Conflict as exc:
        return exc


def submit_resolves(
    rt: Tollkeep, cid: str, holds: list[str], action: str, amount: Callable[[int], int | None]
) -> list[Future[Any]]:
    return [
        rt.executor.submit(rt.ledger.resolve_fn(cid, h, action=action, amount=amount(i)), key=cid)
        for i, h in enumerate(holds)
    ]


def check_one_winner(results: list[list[Any]]) -> list[dict[str, Any]]:
    """For each hold, its outcomes across runtimes: one win, the rest conflicts or replays."""
    winners = []
    for outs in results:
        wins = [o for o in outs if isinstance(o, dict) and not o["duplicate"]]
        assert len(wins) == 1, f"{len(wins)} resolutions won: {outs}"
        for o in outs:
            if isinstance(o, Conflict):
                assert o.code == "hold_resolved", o
            elif o is not wins[0]:
                assert o["duplicate"] and o["status"] == wins[0]["status"], (o, wins[0])
        winners.append(wins[0])
    return winners


def holds_for(tk: Tollkeep, cid: str, ttl: int = 300) -> list[str]:
    return [
        tk.ledger.create_hold(cid, idempotency_key=f"h{i}", amount=5 + i % 3, ttl_seconds=ttl)["id"]
        for i in range(HOLDS)
    ]


def assert_conserved(tk: Tollkeep, cid: str, charged: int) -> None:
    b = tk.balance(cid)
    assert b["held"] == 0
    assert b["balance"] == START - charged, "credits created or lost"
    assert sum(e["charged"] - e["refunded"] for e in tk.usage(cid, limit=500)["data"]) == charged
    report = tk.verify()
    assert report.ok, report.problems


def test_settle_races_release_across_runtimes(tk: Tollkeep, other: Tollkeep) -> None:
    cid = str(tk.customers.create("race-settle")["id"])
    tk.ledger.grant(cid, START, idempotency_key="buy")
    holds = holds_for(tk, cid)
    # runtime A settles every hold (below, equal or above what it holds); B releases them all;
    # then A settles again with the same request (a replay, or a conflict if B won)
    amount = lambda i: 4 + i % 5  # noqa: E731
    a = submit_resolves(tk, cid, holds, "settle", amount)
    b = submit_resolves(other, cid, holds, "release", lambda i: None)
    a2 = submit_resolves(other, cid, holds, "settle", amount)
    results = [[outcome(x), outcome(y), outcome(z)] for x, y, z in zip(a, b, a2, strict=True)]
    winners = check_one_winner(results)
    charged = sum(w["charged"] for w in winners if w["status"] == "settled")
    assert_conserved(tk, cid, charged)
    for w, h in zip(winners, holds, strict=True):
        assert tk.hold(cid, h)["status"] == w["status"]


def test_release_races_the_sweeper_across_runtimes(tk: Tollkeep, other: Tollkeep, clock: FrozenClock) -> None:
    cid = str(tk.customers.create("race-sweep")["id"])
    tk.ledger.grant(cid, START, idempotency_key="buy")
    holds = holds_for(tk, cid, ttl=60)
    clock.advance(timedelta(minutes=5))  # every hold is past its TTL: the sweeper may release it
    a = submit_resolves(tk, cid, holds, "release", lambda i: None)
    swept = other.ledger.sweep()
    outs = [outcome(f) for f in a]
    released = [o for o in outs if isinstance(o, dict)]
    assert all(not o["duplicate"] and o["status"] == "released" for o in released)
    assert all(isinstance(o, Conflict) and o.code == "hold_resolved" for o in outs if not isinstance(o, dict))
    assert len(released) + swept["holds_released"] == HOLDS, "a hold resolved twice, or never"
    statuses = [tk.hold(cid, h)["status"] for h in holds]
    assert (
        statuses.count("released") == len(released) and statuses.count("expired") == swept["holds_released"]
    )
    assert other.ledger.sweep()["holds_released"] == 0
    assert_conserved(tk, cid, 0)


def test_settle_races_the_sweeper_and_release(tk: Tollkeep, other: Tollkeep, clock: FrozenClock) -> None:
    """Three ways at once, on holds a few of which have expired."""
    cid = str(tk.customers.create("race-three")["id"])
    tk.ledger.grant(cid, START, idempotency_key="buy")
    short = holds_for(tk, cid, ttl=30)
    clock.advance(timedelta(seconds=31))
    a = submit_resolves(tk, cid, short, "settle", lambda i: 3)
    b = submit_resolves(other, cid, short, "release", lambda i: None)
    swept = other.ledger.sweep()
    outs = [[outcome(x), outcome(y)] for x, y in zip(a, b, strict=True)]
    for settle, _ in outs:
        assert isinstance(settle, Conflict) and settle.code in ("hold_expired", "hold_resolved")
    wins = sum(1 for _, r in outs if isinstance(r, dict))
    assert wins + swept["holds_released"] == HOLDS
    assert_conserved(tk, cid, 0)


def test_refund_races_refund_across_runtimes(tk: Tollkeep, other: Tollkeep) -> None:
    cid = str(tk.customers.create("race-refund")["id"])
    tk.ledger.grant(cid, START, idempotency_key="buy")
    charges = [
        tk.ledger.record_usage(UsageRequest(cid, "api_call", None, f"u{i}"))["event_id"] for i in range(HOLDS)
    ]
    hold = tk.ledger.create_hold(cid, idempotency_key="big", amount=30)
    settled = tk.ledger.resolve_hold(cid, hold["id"], action="settle", amount=20)["operation_id"]
    charges.append(settled)

    def refund(rt: Tollkeep, charge: str, key: str) -> Any:
        try:
            return rt.ledger.refund(charge, idempotency_key=key)
        except Conflict as exc:
            return exc

    with ThreadPoolExecutor(16) as pool:
        # different keys: one refund of the whole charge wins, the other is refused
        diff = [
            (pool.submit(refund, tk, c, f"a-{c}"), pool.submit(refund, other, c, f"b-{c}")) for c in charges
        ]
        diff_out = [(x.result(), y.result()) for x, y in diff]
    for pair in diff_out:
        wins = [o for o in pair if isinstance(o, dict)]
        assert len(wins) == 1, pair
        (loss,) = [o for o in pair if not isinstance(o, dict)]
        assert isinstance(loss, Conflict) and loss.code == "refund_exceeds_charge"
    assert_conserved(tk, cid, 0)


def test_same_refund_key_races_across_runtimes(tk: Tollkeep, other: Tollkeep) -> None:
    cid = str(tk.customers.create("race-refund-key")["id"])
    tk.ledger.grant(cid, START, idempotency_key="buy")
    charges = [
        tk.ledger.record_usage(UsageRequest(cid, "search", None, f"s{i}"))["event_id"] for i in range(HOLDS)
    ]
    with ThreadPoolExecutor(16) as pool:
        futures = [
            (pool.submit(rt.ledger.refund, c, idempotency_key=f"r-{c}", amount=1))
            for c in charges
            for rt in (tk, other)
        ]
        outs = [f.result() for f in futures]
    for i in range(0, len(outs), 2):
        a, b = outs[i], outs[i + 1]
        assert a["id"] == b["id"] and sorted([a["duplicate"], b["duplicate"]]) == [False, True]
    assert tk.balance(cid)["balance"] == START - HOLDS * 1 + HOLDS  # search: 1 credit, refunded
    assert_conserved(tk, cid, 0)
