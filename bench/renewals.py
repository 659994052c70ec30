"""Renewals benchmark (issue #10): the renewal worker's throughput - subscriptions renewed per
second by ``SubscriptionService.run_due`` - against plain ledger grants for the same customers
in the same run, and on PostgreSQL two worker processes claiming from one table.

    python -m bench.renewals [--subs 2000] [--no-postgres] [--profile]

On SQLite (a fresh file) and PostgreSQL when it answers (a fresh schema): N customers, each
subscribed to a monthly plan with the manual provider (``ManualInvoicing``: no outside call),
seeded through ``SubscriptionService.create``. The baseline: one plain ``LedgerService.grant``
per customer, submitted in batches of the worker's batch size through the same group commit.
Then the clock moves past the period end and ``run_due`` runs until it claims nothing: each
subscription ends its period (past_due), gets its next cycle's invoice as a draft with its rate
audit, and the invoice is opened (``subscription.renewal_pending`` in the outbox). Checked after:
exactly one invoice per subscription and cycle, every subscription past_due, ledger verify.

PostgreSQL, then: another N in a second schema, renewed by two ``python -m bench.renewals
--worker`` processes started together (``FOR UPDATE SKIP LOCKED`` claims, smaller batches so
they interleave); the same checks show the claims never collided.

``--profile``: one more run of N/4 with cProfile in every thread (the renewal's units of work
run on the writer threads) and the statements per subscription. Writes its section into
docs/benchmarks.md (replacing an earlier one; ``--no-write``: print only) and
bench/out/renewals.json.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from sqlalchemy import event, func, select  # noqa: E402

from bench.machine import describe as describe_machine  # noqa: E402
from bench.sections import write_section  # noqa: E402
from tollkeep.config import Settings  # noqa: E402
from tollkeep.kit import rawsql  # noqa: E402
from tollkeep.kit.clock import FrozenClock  # noqa: E402
from tollkeep.runtime import Tollkeep  # noqa: E402
from tollkeep.subscriptions.models import Invoice, Subscription  # noqa: E402

SECTION = "## Renewals: the renewal worker vs plain grants (bench/renewals.py)"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
START = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
CATALOG = """
default_plan = "free"
[credits]
unit = "credit"
[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1
[plans.free.allowance]
amount = 10
period = "lifetime"
[plans.pro]
period = "month"
grace_days = 3
prices = { usd = 2900 }
[plans.pro.allowance]
amount = 1000
period = "month"
"""
INV = Invoice.__table__
SUB = Subscription.__table__


def log(msg: str) -> None:
    print(f"[bench.renewals {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def runtime(db_url: str, workdir: Path, clock: FrozenClock, *, migrate: bool = True) -> Tollkeep:
    catalog = workdir / "catalog.toml"
    catalog.write_text(CATALOG)
    settings = Settings(
        database_url=db_url, catalog_path=catalog, run_workers=False, migrate_on_start=migrate
    )
    return Tollkeep(settings, clock=clock)


def seed(tk: Tollkeep, n: int, tag: str) -> tuple[list[str], float]:
    """N customers with a ``pro`` subscription each (16 client threads); (customer ids, seconds)."""

    def one(i: int) -> str:
        cid = str(tk.customers.create(f"bench-{tag}-{i}")["id"])
        tk.subscriptions.create(cid, "pro")
        return cid

    t0 = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        cids = list(pool.map(one, range(n)))
    return cids, time.perf_counter() - t0


def grants(tk: Tollkeep, cids: list[str], batch: int) -> float:
    """Plain grants, one per customer, submitted ``batch`` at a time: grants/s."""
    t0 = time.perf_counter()
    for at in range(0, len(cids), batch):
        futures = [
            tk.executor.submit(tk.ledger.grant_fn(cid, 1000, idempotency_key=f"bench-grant-{at + i}"))
            for i, cid in enumerate(cids[at : at + batch])
        ]
        for f in futures:
            f.result()
    return len(cids) / (time.perf_counter() - t0)


def renew_all(tk: Tollkeep, limit: int | None = None) -> tuple[Counter[str], float, int]:
    """``run_due`` until it claims nothing: (summed counts, seconds, runs)."""
    total: Counter[str] = Counter()
    runs = 0
    t0 = time.perf_counter()
    while True:
        out = tk.subscriptions.run_due(limit=limit)
        runs += 1
        total.update(out)
        if not out["claimed"]:
            return total, time.perf_counter() - t0, runs


def check(tk: Tollkeep, n: int) -> dict[str, Any]:
    """One invoice per subscription and cycle, every subscription past_due, the ledger verifies."""
    with tk.db.scope(write=False) as s:
        per_cycle = s.execute(
            select(INV.c.subscription_id, INV.c.cycle, func.count().label("n")).group_by(
                INV.c.subscription_id, INV.c.cycle
            )
        ).all()
        statuses = dict(s.execute(select(SUB.c.status, func.count()).group_by(SUB.c.status)).all())
    renewals = [r for r in per_cycle if r.cycle == 2]
    return {
        "invoices_cycle_2": sum(r.n for r in renewals),
        "subscriptions_invoiced": len(renewals),
        "doubles": sum(1 for r in per_cycle if r.n > 1),
        "statuses": {str(k): int(v) for k, v in statuses.items()},
        "ledger_verify_ok": tk.verify().ok,
        "ok": len(renewals) == n and all(r.n == 1 for r in per_cycle) and statuses.get("past_due") == n,
    }


def bench_db(label: str, db_url: str, workdir: Path, n: int, batch: int) -> dict[str, Any]:
    clock = FrozenClock(START)
    tk = runtime(db_url, workdir, clock)
    try:
        log(f"{label}: seeding {n:,} subscriptions")
        cids, seed_s = seed(tk, n, label)
        log(f"{label}: seeded in {seed_s:.1f}s ({n / seed_s:,.0f}/s); baseline: {n:,} plain grants")
        grant_rps = grants(tk, cids, batch)
        log(f"{label}: {grant_rps:,.0f} grants/s; renewing")
        clock.advance(timedelta(days=32))
        counts, secs, runs = renew_all(tk, limit=batch)
        rate = counts["invoiced"] / secs
        log(f"{label}: {counts['invoiced']:,} invoiced in {secs:.1f}s ({runs} runs): {rate:,.0f}/s")
        checks = check(tk, n)
        log(f"{label}: checks {checks}")
    finally:
        tk.close()
    return {
        "label": label,
        "subs": n,
        "batch": batch,
        "seed_per_s": n / seed_s,
        "grant_per_s": grant_rps,
        "renew_s": secs,
        "runs": runs,
        "counts": dict(counts),
        "renew_per_s": rate,
        "vs_grants": rate / grant_rps,
        "checks": checks,
    }


# ---- two worker processes (PostgreSQL) ----------------------------------------------------------------
def worker(db_url: str, at: str, batch: int) -> int:
    """``--worker``: renew until nothing is due, at the clock time ``at``, after a line on stdin."""
    with tempfile.TemporaryDirectory(prefix="tk-bench-renew-w-") as tmp:
        tk = runtime(db_url, Path(tmp), FrozenClock(datetime.fromisoformat(at)), migrate=False)
        try:
            print("ready", flush=True)
            sys.stdin.readline()
            start = time.time()
            counts, _, runs = renew_all(tk, limit=batch)
            print(
                json.dumps({"start": start, "end": time.time(), "counts": dict(counts), "runs": runs}),
                flush=True,
            )
        finally:
            tk.close()
    return 0


def bench_two_workers(db_url: str, workdir: Path, n: int, batch: int) -> dict[str, Any]:
    clock = FrozenClock(START)
    tk = runtime(db_url, workdir, clock)
    try:
        log(f"PostgreSQL, 2 processes: seeding {n:,} subscriptions")
        seed(tk, n, "mp")
    finally:
        tk.close()
    at = (START + timedelta(days=32)).isoformat()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLKEEP_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    cmd = [sys.executable, "-m", "bench.renewals", "--worker", db_url, "--at", at, "--batch", str(batch)]
    procs = [
        subprocess.Popen(cmd, cwd=workdir, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # go, both at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            assert p.stdout is not None
            outs.append(json.loads(p.stdout.readline()))
            p.wait(timeout=600)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
    wall = max(o["end"] for o in outs) - min(o["start"] for o in outs)
    invoiced = sum(o["counts"].get("invoiced", 0) for o in outs)
    claimed = sum(o["counts"].get("claimed", 0) for o in outs)
    tk = runtime(db_url, workdir, FrozenClock(START + timedelta(days=32)), migrate=False)
    try:
        checks = check(tk, n)
    finally:
        tk.close()
    log(f"PostgreSQL, 2 processes: {invoiced:,} invoiced in {wall:.1f}s: {invoiced / wall:,.0f}/s; {checks}")
    return {
        "subs": n,
        "batch": batch,
        "wall_s": wall,
        "renew_per_s": invoiced / wall,
        "per_worker": [o["counts"] for o in outs],
        "claimed": claimed,
        "invoiced": invoiced,
        "checks": checks,
    }


# ---- where the time goes --------------------------------------------------------------------------
def profile_run(db_url: str, workdir: Path, n: int, batch: int) -> dict[str, Any]:
    """A renewal run of ``n`` with cProfile in every thread (the units of work run on the
    executor's writer threads) and the statements counted (SQLAlchemy's, and the prebuilt ones
    run on the driver cursor)."""
    clock = FrozenClock(START)
    profiles: list[cProfile.Profile] = []
    lock = threading.Lock()
    go = threading.Event()

    def boot(*_: Any) -> None:  # a thread's profile function until the run: then its own profiler
        if go.is_set():
            p = cProfile.Profile()
            with lock:
                profiles.append(p)
            p.enable()

    threading.setprofile(boot)  # for the threads the runtime starts (the writers)
    try:
        tk = runtime(db_url, workdir, clock)
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]
    statements: Counter[str] = Counter()
    sql_s = [0.0]
    t_local = threading.local()

    def name(sql: str) -> str:
        words = sql.split()
        return " ".join(words[:3] if words[0] != "SELECT" else ["SELECT", "…", *_from(words)])

    def before(conn: Any, cursor: Any, stmt: str, *a: Any) -> None:
        statements[name(stmt)] += 1
        t_local.t = time.perf_counter()

    def after(*a: Any) -> None:
        sql_s[0] += time.perf_counter() - getattr(t_local, "t", time.perf_counter())

    real_run = rawsql.RawStatement._run

    def counted_run(self: rawsql.RawStatement, fast: Any, params: Any) -> Any:
        statements["(prebuilt) " + name(self._for(fast[1]).sql)] += 1
        t = time.perf_counter()
        try:
            return real_run(self, fast, params)
        finally:
            sql_s[0] += time.perf_counter() - t

    try:
        seed(tk, n, "profile")
        clock.advance(timedelta(days=32))
        event.listen(tk.db.engine, "before_cursor_execute", before)
        event.listen(tk.db.engine, "after_cursor_execute", after)
        rawsql.RawStatement._run = counted_run  # type: ignore[method-assign]
        go.set()
        boot()  # this thread too
        t0 = time.perf_counter()
        try:
            counts, _, _ = renew_all(tk)
        finally:
            wall = time.perf_counter() - t0
            go.clear()
            rawsql.RawStatement._run = real_run  # type: ignore[method-assign]
            event.remove(tk.db.engine, "before_cursor_execute", before)
            event.remove(tk.db.engine, "after_cursor_execute", after)
    finally:
        tk.close()  # the writer threads end: their profiles are complete
    invoiced = max(1, counts["invoiced"])
    return {
        "subs": n,
        "per_s": counts["invoiced"] / wall,
        "statements_per_sub": sum(statements.values()) / invoiced,
        "statements": [(s, round(c / invoiced, 2)) for s, c in statements.most_common(10)],
        "sql_share": sql_s[0] / wall,
        "threads": len(profiles),
        "top": _top(profiles, wall),
    }


def _from(words: list[str]) -> list[str]:
    try:
        return ["FROM", words[words.index("FROM") + 1]]
    except ValueError:
        return []


def _top(profiles: list[cProfile.Profile], wall: float, top: int = 14) -> list[tuple[str, float]]:
    """Functions of tollkeep (and SQLAlchemy's execute) by inclusive time over all threads, as a
    share of the run's wall time."""
    for p in profiles:
        p.disable()
    stats = pstats.Stats(*profiles)  # type: ignore[arg-type]
    out = []
    for (file, line, fn), (_cc, _nc, _tt, ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "/src/tollkeep/" in file and fn not in {"<lambda>", "_writer_loop", "_run_batch"}:
            out.append((f"{fn} ({file.split('/src/', 1)[-1]}:{line})", round(ct / wall, 3)))
        elif fn == "execute" and file.endswith("orm/session.py"):
            out.append(("Session.execute (SQLAlchemy)", round(ct / wall, 3)))
    out.sort(key=lambda x: -x[1])
    return out[:top]


# ---- report ---------------------------------------------------------------------------------------
def render(
    results: list[dict[str, Any]], two: dict[str, Any] | None, prof: dict[str, Any] | None, a: Any
) -> str:
    machine = a.machine
    lines = [
        SECTION,
        "",
        f"{machine}; load average (1/5/15 min) {' '.join(f'{x:.2f}' for x in a.load_start)} at the start, "
        f"{' '.join(f'{x:.2f}' for x in a.load_end)} at the end (a shared machine: the ratio to the "
        "baseline, measured in the same run, matters more than the absolutes). In process, "
        "`run_workers` off, "
        f"the manual provider; `run_due` with its default batch ({a.batch}) until it claims nothing, "
        "after the clock moved 32 days past the start of the subscriptions' first monthly period. "
        "Each renewal: claim, end the period (past_due, event), the next cycle's draft invoice with "
        "its rate audit, the provider's invoice (manual: nothing outside), open it (event): one "
        "unit of work per subscription with the manual provider and fixed rates (three with a "
        "provider that calls out), through the group-committing writer. The baseline is one "
        "plain ledger grant per customer, submitted in batches of the same size.",
        "",
        "| database | subscriptions | seeded/s (create) | plain grants/s (baseline) | **renewals/s** "
        "| ratio to grants | run_due calls | one invoice per cycle | ledger verify |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in results:
        c = r["checks"]
        lines.append(
            f"| {r['label']} | {r['subs']:,} | {r['seed_per_s']:,.0f} | {r['grant_per_s']:,.0f} | "
            f"**{r['renew_per_s']:,.0f}** | {r['vs_grants']:.2f} | {r['runs']} | "
            f"{'yes' if c['ok'] else '**NO**'} "
            f"({c['invoices_cycle_2']:,} invoices, {c['doubles']} doubled) | "
            f"{'ok' if c['ledger_verify_ok'] else '**FAILED**'} |"
        )
    if two is not None:
        one = next((r for r in results if r["label"] == "PostgreSQL"), None)
        c = two["checks"]
        speedup = f"{two['renew_per_s'] / one['renew_per_s']:.2f}x one process" if one else ""
        lines += [
            "",
            f"**PostgreSQL, two worker processes** (`python -m bench.renewals --worker`, started together, "
            f"`run_due(limit={two['batch']})` each until it claims nothing; another {two['subs']:,} "
            "subscriptions in a fresh schema):",
            "",
            "| renewals/s (both) | vs one process | claimed (worker 1 + worker 2) | invoices for cycle 2 "
            "| subscriptions with two invoices for a cycle | all past_due | ledger verify |",
            "|---:|---|---|---:|---:|---|---|",
            f"| **{two['renew_per_s']:,.0f}** | {speedup} | "
            + " + ".join(f"{w.get('claimed', 0):,}" for w in two["per_worker"])
            + f" = {two['claimed']:,} | {c['invoices_cycle_2']:,} | **{c['doubles']}** | "
            f"{'yes' if c['statuses'].get('past_due') == two['subs'] else 'no: ' + str(c['statuses'])} | "
            f"{'ok' if c['ledger_verify_ok'] else '**FAILED**'} |",
        ]
    lines += [
        "",
        "Targets (issue #10):",
        "",
        "| database | target | measured | result |",
        "|---|---|---:|---|",
    ]
    for r in results:
        if r["label"] == "SQLite":
            ok = r["renew_per_s"] >= 200
            lines.append(
                f"| SQLite | renewal worker >= 200 subscriptions/s | {r['renew_per_s']:,.0f}/s | "
                f"{'pass' if ok else '**FAIL**'} |"
            )
    if two is not None:
        ok = two["checks"]["doubles"] == 0 and two["checks"]["ok"]
        lines.append(
            f"| PostgreSQL | two workers: no cycle invoiced twice | {two['checks']['doubles']} doubled | "
            f"{'pass' if ok else '**FAIL**'} |"
        )
    if prof is not None:
        lines += [
            "",
            f"**Where the time goes** (`--profile`: a run of {prof['subs']:,} on {a.profile_db}, "
            f"{prof['per_s']:,.0f}/s under the profiler): {prof['statements_per_sub']:.1f} SQL statements "
            f"per renewal, {100 * prof['sql_share']:.0f}% of the wall time inside the driver; the most "
            "frequent, per renewal: " + "; ".join(f"`{s}` {c}" for s, c in prof["statements"]) + ".",
            "",
            f"Inclusive time over all {prof['threads']} profiled threads, as a share of the run's wall time "
            "(the writer threads run the units of work; over 100% means threads overlapped):",
            "",
            "| function | share |",
            "|---|---:|",
            *(f"| `{f}` | {100 * sh:.0f}% |" for f, sh in prof["top"]),
        ]
    lines += ["", *NOTES, ""]
    return "\n".join(lines)


NOTES = [
    "What limits it, and what was done:",
    "",
    "- **Before** (the first run of this benchmark, same machine): 52-81 renewals/s on SQLite, ratio "
    "0.12 to grants: three units of work per renewal (`_advance`, `_draft`, `_opened`), each locking "
    "and re-reading the subscription, about 16 statements through SQLAlchemy's `Session.execute` "
    "(about half of the writer's time), against a small share in the driver.",
    "- **Done**: the subscriptions domain's reads and writes run as prebuilt statements "
    "(`kit/rawsql.py`, an INSERT/UPDATE compiled once per set of columns, as the ledger's debit "
    "does); with a provider and a rate source that make no outside call (`manual`, fixed rates: "
    "`offline = True`) the invoice is drafted and opened in the period end's own unit of work (one "
    "commit per renewal instead of three; providers that call out keep the draft / call / open "
    "split, the call outside any transaction); a subscription's licence is looked up only when a "
    "licensed plan is involved. Same machine, 400 subscriptions: 74 -> 281/s; the table above: "
    "2,000.",
    "- **Left**: about 15 statements per renewal (4 reads of the subscription, 3 of invoices, 2 of "
    "`plan_changes` still through `Session.execute`); one SELECT of pending and scheduled changes and "
    "no re-read after `_update` would take it near 10.",
    "- **PostgreSQL**: each unit of work is a chain of round trips on the customer's writer lane, "
    "committed with an fsync; two processes add claimers (`SKIP LOCKED`: disjoint batches) but "
    "share one server and, here, the same 2 cores.",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.renewals", description=__doc__.splitlines()[0])
    ap.add_argument("--subs", type=int, default=2000, help="subscriptions per run")
    ap.add_argument("--batch", type=int, default=200, help="the renewal batch (RenewalSettings.batch)")
    ap.add_argument(
        "--worker-batch", type=int, default=50, help="run_due limit of the two PostgreSQL workers"
    )
    ap.add_argument("--postgres", default=DEFAULT_PG)
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--profile", action="store_true", help="one more run of subs/4 with statements counted")
    ap.add_argument("--no-write", action="store_true", help="print; don't write docs/benchmarks.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite the section from the last run's JSON")
    ap.add_argument("--worker", metavar="DB_URL", help=argparse.SUPPRESS)
    ap.add_argument("--at", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        return worker(a.worker, a.at, a.batch)
    if a.render_only:  # the last run's numbers, this code's prose
        saved = json.loads((ROOT / "bench" / "out" / "renewals.json").read_text())
        vars(a).update(saved["meta"])
        return _finish(a, saved)
    m = describe_machine()
    a.machine = (
        f"{m['date']}, commit {m['git_commit']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}"
    )
    a.load_start = os.getloadavg()
    results: list[dict[str, Any]] = []
    two = prof = None
    a.profile_db = "SQLite"
    with tempfile.TemporaryDirectory(prefix="tk-bench-renew-") as tmp:
        results.append(bench_db("SQLite", f"sqlite:///{tmp}/renewals.db", Path(tmp), a.subs, a.batch))
        if a.profile:
            log("SQLite: profiled run")
            prof = profile_run(f"sqlite:///{tmp}/profile.db", Path(tmp), max(10, a.subs // 4), a.batch)
    if not a.no_postgres:
        schemas = ("bench_renewals", "bench_renewals_mp")
        try:
            import psycopg

            raw = a.postgres.replace("+psycopg", "")
            with psycopg.connect(raw, autocommit=True, connect_timeout=3) as c:
                for schema in schemas:
                    c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
                    c.execute(f"CREATE SCHEMA {schema}")
        except Exception as exc:  # PostgreSQL absent: SQLite alone, and said so
            log(f"PostgreSQL not benchmarked: {type(exc).__name__}: {exc}")
        else:
            try:
                url = f"{a.postgres}?options=-csearch_path%3D{schemas[0]}"
                with tempfile.TemporaryDirectory(prefix="tk-bench-renew-") as tmp:
                    results.append(bench_db("PostgreSQL", url, Path(tmp), a.subs, a.batch))
                url = f"{a.postgres}?options=-csearch_path%3D{schemas[1]}"
                with tempfile.TemporaryDirectory(prefix="tk-bench-renew-") as tmp:
                    two = bench_two_workers(url, Path(tmp), a.subs, a.worker_batch)
            finally:
                with psycopg.connect(raw, autocommit=True) as c:
                    for schema in schemas:
                        c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    a.load_end = os.getloadavg()
    saved = {
        "runs": results,
        "two_workers": two,
        "profile": prof,
        "meta": {
            "machine": a.machine,
            "load_start": a.load_start,
            "load_end": a.load_end,
            "batch": a.batch,
            "profile_db": a.profile_db,
        },
    }
    (ROOT / "bench" / "out").mkdir(exist_ok=True)
    (ROOT / "bench" / "out" / "renewals.json").write_text(json.dumps(saved, indent=2, default=str))
    return _finish(a, saved)


def _finish(a: argparse.Namespace, saved: dict[str, Any]) -> int:
    text = render(saved["runs"], saved["two_workers"], saved["profile"], a)
    print(text)
    if not a.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
