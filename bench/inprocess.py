"""(a) Ledger debits per second in-process: no HTTP, just ``tk.ledger.record_usage``.

Every call returns only after the transaction that holds it has committed (on SQLite the
writer thread's group commit, on PostgreSQL the customer's writer lane), so each counted
debit is durable in the same sense as an HTTP 200.

:func:`bench_wallet_sizes` measures the same debits in wallets of 1, 100, 1,000 and 10,000 live
grants: a debit should cost the same whatever the number of grants in the wallet.
"""

from __future__ import annotations

import itertools
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import wait
from datetime import UTC, datetime, timedelta
from typing import Any

from tollkeep.config import Settings
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep


def run_threads(
    fn: Callable[[str], None], threads: int, n: int, max_seconds: float, tk: Tollkeep | None = None
) -> dict[str, Any]:
    """Call ``fn`` with ``n`` distinct keys from ``threads`` threads (or until ``max_seconds``);
    ops/s, errors (the first one kept), and with ``tk`` how many commands shared a commit."""
    prefix = secrets.token_hex(4)
    claim = itertools.count()  # next() on a count is atomic under the GIL
    done = [0] * threads
    errors = [0] * threads
    first_error: list[str] = []
    deadline = time.perf_counter() + max_seconds

    def worker(i: int) -> None:
        while time.perf_counter() < deadline:
            k = next(claim)
            if k >= n:
                return
            try:
                fn(f"b-{prefix}-{k}")
                done[i] += 1
            except Exception as exc:
                errors[i] += 1
                if not first_error:
                    first_error.append(repr(exc)[:300])

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    batches0, commands0 = (tk.executor.batches, tk.executor.commands) if tk else (0, 0)
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0
    ops = sum(done)
    out: dict[str, Any] = {
        "threads": threads,
        "ops": ops,
        "errors": sum(errors),
        "first_error": first_error[0] if first_error else None,
        "seconds": round(elapsed, 3),
        "ops_per_s": round(ops / elapsed, 1) if elapsed else 0.0,
        "capped_by_time": ops + sum(errors) < n,
    }
    if tk is not None:
        batches = tk.executor.batches - batches0
        commands = tk.executor.commands - commands0
        # SQLite only: how many commands shared one COMMIT (group commit)
        out["avg_batch"] = round(commands / batches, 2) if batches else None
    return out


def _run(tk: Tollkeep, customer_id: str, threads: int, n: int, max_seconds: float) -> dict[str, Any]:
    def debit(key: str) -> None:
        tk.ledger.record_usage(UsageRequest(customer_id, "api_call", None, key))

    return run_threads(debit, threads, n, max_seconds, tk)


def bench_inprocess(
    database_url: str, *, n: int, thread_counts: tuple[int, ...] = (1, 16), max_seconds: float = 30.0
) -> dict[str, Any]:
    settings = Settings(database_url=database_url, run_workers=False)
    tk = Tollkeep(settings)
    try:
        c = tk.customers.create(f"bench-inproc-{secrets.token_hex(4)}")
        tk.ledger.grant(c["id"], 10**12, source="purchase", idempotency_key="bench-grant")
        tk.ledger.record_usage(UsageRequest(c["id"], "api_call", None, "warmup"))  # import/JIT warm-up
        runs = [_run(tk, c["id"], t, n, max_seconds) for t in thread_counts]
        return {"sqlite_synchronous": settings.sqlite_synchronous, "debits": n, "runs": runs}
    finally:
        tk.close()


def _fill_wallet(tk: Tollkeep, customer_id: str, grants: int) -> None:
    """``grants`` live purchase grants of 10^9 credits: every other one expires (far in the
    future, each a minute after the previous), the others never do. Submitted all at once, so
    they are written in batches like any burst of commands."""
    far = datetime(2099, 1, 1, tzinfo=UTC)
    futures = [
        tk.executor.submit(
            tk.ledger.grant_fn(
                customer_id,
                10**9,
                source="purchase",
                expires_at=far + timedelta(minutes=i) if i % 2 else None,
                idempotency_key=f"bench-pack-{i}",
            ),
            key=customer_id,
        )
        for i in range(grants)
    ]
    wait(futures)
    for f in futures:
        f.result()


def bench_wallet_sizes(
    database_url: str,
    *,
    n: int,
    sizes: tuple[int, ...] = (1, 100, 1_000, 10_000),
    threads: int = 16,
    max_seconds: float = 30.0,
) -> dict[str, Any]:
    """Debits/s from ``threads`` threads in one wallet holding ``size`` live grants, for each size
    (a fresh customer each). Each debit takes 1 credit from the first grant in spend order."""
    tk = Tollkeep(Settings(database_url=database_url, run_workers=False))
    rows = []
    try:
        for size in sizes:
            c = tk.customers.create(f"bench-wallet-{size}-{secrets.token_hex(4)}")
            t0 = time.perf_counter()
            _fill_wallet(tk, c["id"], size)
            if not tk.db.is_sqlite:
                # the statistics autovacuum would gather within a minute of such a burst: without
                # them the plans PostgreSQL cached while the tables were small stay in use
                with tk.db.engine.begin() as conn:
                    conn.exec_driver_sql("ANALYZE")
            setup = time.perf_counter() - t0
            for i in range(20):  # warm-up
                tk.ledger.record_usage(UsageRequest(c["id"], "api_call", None, f"warmup-{i}"))
            run = _run(tk, c["id"], threads, n, max_seconds)
            rows.append({"grants": size, "setup_s": round(setup, 2), **run})
        base = rows[0]["ops_per_s"] if rows and rows[0]["grants"] == 1 else None
        for r in rows:
            r["vs_1_grant"] = round(r["ops_per_s"] / base, 3) if base else None
        return {"threads": threads, "debits": n, "runs": rows}
    finally:
        tk.close()
