"""Concurrency through the real service, on SQLite and PostgreSQL: many threads (and processes)
charging one wallet with shared idempotency keys must charge each key at most once, never push
the balance below zero, and leave a journal that verifies."""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from tollkeep.kit.errors import Conflict, InsufficientCredits
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

from ..conftest import make_settings

THREADS = 48
BALANCE = 50
DISTINCT_KEYS = 120
CALLS = 200

Outcome = tuple[str, str, str | None]  # (key, "ok" | "dup" | "insufficient", event_id)


def _calls(seed: int) -> list[str]:
    rng = random.Random(seed)
    keys = [f"key-{i:03d}" for i in range(DISTINCT_KEYS)]
    calls = keys + [rng.choice(keys) for _ in range(CALLS - DISTINCT_KEYS)]
    rng.shuffle(calls)
    return calls


def _charge(tk: Tollkeep, cid: str, key: str) -> Outcome:
    try:
        r = tk.ledger.record_usage(UsageRequest(cid, "api_call", None, key))
    except InsufficientCredits:
        return key, "insufficient", None
    return key, "dup" if r["duplicate"] else "ok", str(r["event_id"])


def _run_threads(tk: Tollkeep, cid: str, keys: list[str], threads: int) -> list[Outcome]:
    go = threading.Event()  # every worker thread starts at once

    def one(key: str) -> Outcome:
        go.wait(timeout=30)
        return _charge(tk, cid, key)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [pool.submit(one, k) for k in keys]
        go.set()
        return [f.result() for f in futures]


def _check(outcomes: list[Outcome], tk: Tollkeep, cid: str) -> None:
    by_key: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    for key, what, eid in outcomes:
        by_key[key].append((what, eid))
    charged = {k for k, v in by_key.items() if any(w == "ok" for w, _ in v)}
    assert len(charged) == BALANCE, f"{len(charged)} keys charged, balance was {BALANCE}"
    for key, results in by_key.items():
        oks = [eid for w, eid in results if w == "ok"]
        assert len(oks) <= 1, f"key {key} charged {len(oks)} times"
        if oks:
            # every other call with this key replays the first result
            assert all(w == "dup" and eid == oks[0] for w, eid in results if (w, eid) != ("ok", oks[0]))
        else:
            assert all(w == "insufficient" for w, _ in results)
    b = tk.balance(cid)
    assert b["balance"] == 0 and b["overdraft_used"] == 0
    usage = tk.usage(cid, limit=500)["data"]
    assert len(usage) == BALANCE
    assert {u["idempotency_key"] for u in usage} == charged
    report = tk.verify()
    assert report.ok, report.problems


def test_threads_share_keys_on_one_wallet(tk: Tollkeep) -> None:
    cid = str(tk.customers.create("hot-wallet")["id"])
    tk.ledger.grant(cid, BALANCE)
    outcomes = _run_threads(tk, cid, _calls(1), THREADS)
    assert len(outcomes) == CALLS
    _check(outcomes, tk, cid)


# ------------------------------------------------------------------------------------------ processes
def _process_worker(db_url: str, cid: str, keys: list[str], threads: int) -> list[Outcome]:
    rt = Tollkeep(make_settings(db_url, db_pool_size=threads))
    try:
        return _run_threads(rt, cid, keys, threads)
    finally:
        rt.close()


def test_processes_share_keys_on_one_wallet(tk: Tollkeep, db_url: str) -> None:
    cid = str(tk.customers.create("hot-wallet-mp")["id"])
    tk.ledger.grant(cid, BALANCE)
    calls = _calls(2)
    procs = 4
    # every process sees some keys that other processes also use
    chunks = [calls[i::procs] for i in range(procs)]
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        results = pool.starmap(_process_worker, [(db_url, cid, chunk, 8) for chunk in chunks])
    outcomes = [o for chunk in results for o in chunk]
    assert len(outcomes) == CALLS
    _check(outcomes, tk, cid)


# ------------------------------------------------------------------------------------------ holds
def test_concurrent_holds_settles_and_releases(tk: Tollkeep) -> None:
    start = 100
    cid = str(tk.customers.create("holds")["id"])
    tk.ledger.grant(cid, start)
    rng = random.Random(3)
    plans = [
        (i, rng.randint(1, 6), rng.choice(["settle_less", "settle_more", "release", "race", "open"]))
        for i in range(120)
    ]
    lock = threading.Lock()
    charged: dict[str, int] = {}
    still_open: dict[str, int] = {}
    counts: dict[str, int] = defaultdict(int)

    def one(plan: tuple[int, int, str]) -> None:
        i, amount, action = plan
        try:
            h = tk.ledger.create_hold(cid, idempotency_key=f"h{i}", amount=amount)
        except InsufficientCredits:
            with lock:
                counts["hold_refused"] += 1
            return
        hid = h["id"]
        if action == "open":
            with lock:
                still_open[hid] = amount
            return
        if action == "release":
            tk.ledger.resolve_hold(cid, hid, action="release")
            return
        if action == "race":
            # settle and release race for one hold: exactly one resolution wins
            outcomes: list[Any] = []

            def resolve(kind: str) -> None:
                try:
                    outcomes.append(
                        tk.ledger.resolve_hold(
                            cid, hid, action=kind, amount=amount if kind == "settle" else None
                        )
                    )
                except Conflict as exc:
                    outcomes.append(exc)

            ts = [threading.Thread(target=resolve, args=(k,)) for k in ("settle", "release", "settle")]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            wins = [o for o in outcomes if isinstance(o, dict) and not o["duplicate"]]
            assert len(wins) == 1
            if wins[0]["status"] == "settled":
                with lock:
                    charged[hid] = amount
            return
        final = max(0, amount - 2) if action == "settle_less" else amount + 3
        try:
            r = tk.ledger.resolve_hold(cid, hid, action="settle", amount=final)
        except InsufficientCredits:
            with lock:
                counts["settle_refused"] += 1
            r = tk.ledger.resolve_hold(cid, hid, action="release")
            assert r["status"] == "released"
            return
        assert r["charged"] == final
        with lock:
            charged[hid] = final

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(one, plans))

    b = tk.balance(cid)
    assert b["held"] == sum(still_open.values())
    assert b["balance"] == start - sum(charged.values()) - sum(still_open.values())
    assert b["balance"] >= 0 and b["overdraft_used"] == 0
    report = tk.verify()
    assert report.ok, report.problems
    for hid in still_open:
        tk.ledger.resolve_hold(cid, hid, action="release")
    assert tk.balance(cid)["balance"] == start - sum(charged.values())


def test_concurrent_refunds_of_one_charge(tk: Tollkeep) -> None:
    cid = str(tk.customers.create("refunds")["id"])
    tk.ledger.grant(cid, 100)
    ev = tk.ledger.record_usage(UsageRequest(cid, "search", Decimal(60), "big"))  # 30 credits
    assert ev["charged"] == 30

    def refund(i: int) -> int:
        try:
            return int(tk.ledger.refund(ev["event_id"], idempotency_key=f"r{i % 20}", amount=2)["amount"])
        except Conflict:
            return 0

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        list(pool.map(refund, range(60)))
    # 20 distinct keys of 2 each would be 40: only 15 fit in the charge of 30
    assert tk.usage(cid)["data"][0]["refunded"] == 30
    assert tk.balance(cid)["balance"] == 100
    assert tk.verify().ok
