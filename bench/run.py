"""``python -m bench.run`` (``make bench``): one run measures, on SQLite and (when it answers)
PostgreSQL:

(a) in-process ledger debits/s from 1 and 16 threads, and in wallets of 1, 100, 1,000 and 10,000
    live grants;
(b) the real ``tollkeep serve`` under wrk: ``POST /v1/usage`` debits and the ``GET /healthz``
    no-op baseline at 1, 16 and 64 connections;
(c) durability: acknowledged debits survive ``kill -9`` of the server, and ``tollkeep ledger
    verify`` passes after the restart.

Writes docs/benchmarks.md and bench/out/results.json.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import machine, report
from bench.holds import bench_holds
from bench.inprocess import bench_inprocess, bench_wallet_sizes
from bench.loadgen import LoadRun, LoadSpec, ensure_wrk, run_load
from bench.server import Server, count_usage_via_sql, ledger_verify

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="short runs (about a minute in all)")
    p.add_argument("--no-postgres", action="store_true", help="SQLite only")
    p.add_argument("--postgres-url", default=DEFAULT_PG, help="server to use (a fresh schema is made)")
    p.add_argument("--duration", type=float, help="seconds per HTTP load test (default 10, quick 3)")
    p.add_argument("--connections", default="1,16,64", help="comma-separated concurrency levels")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk -t (default 1: CPU for the server)")
    p.add_argument("--debits", type=int, help="in-process debits per thread count (default 3000, quick 500)")
    p.add_argument(
        "--wallet-sizes",
        default="1,100,1000,10000",
        help="live grants per wallet for the big-wallet debits (comma-separated; empty: skip)",
    )
    p.add_argument("--profile", action="store_true", help="py-spy the server (top-concurrency debits)")
    p.add_argument("--python-loadgen", action="store_true", help="use the asyncio+httpx fallback, not wrk")
    p.add_argument("--render-only", action="store_true", help="rewrite --out from bench/out/results.json")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks.md", help="markdown report")
    a = p.parse_args(argv)
    a.duration = a.duration or (3.0 if a.quick else 10.0)
    a.debits = a.debits or (500 if a.quick else 3000)
    a.warmup = 1.0 if a.quick else 2.0
    a.burst = 2.0 if a.quick else 5.0
    a.conns = [int(c) for c in a.connections.split(",") if c.strip()]
    a.sizes = tuple(int(g) for g in a.wallet_sizes.split(",") if g.strip())
    return a


# ---- (b) HTTP ---------------------------------------------------------------------------------------
def bench_http(srv: Server, a: argparse.Namespace, tool: str, run_dir: Path, label: str) -> dict[str, Any]:
    _, key = srv.new_customer("http")

    def spec(path: str, method: str, conns: int, duration: float) -> LoadSpec:
        return LoadSpec(srv.base, path, method, conns, duration, key=key, threads=a.wrk_threads)

    log(f"{label}: warm-up")
    run_load(spec("/healthz", "GET", 16, a.warmup), tool, run_dir)
    run_load(spec("/v1/usage", "POST", 16, a.warmup), tool, run_dir)
    rows = []
    profile = None
    top = max(a.conns)
    for c in a.conns:
        log(f"{label}: GET /healthz, {c} connections, {a.duration:g}s")
        base = run_load(spec("/healthz", "GET", c, a.duration), tool, run_dir)
        log(f"  {base['rps']:.0f} req/s, p99 {base['p99_ms']} ms, errors {base['errors']}")
        log(f"{label}: POST /v1/usage, {c} connections, {a.duration:g}s")
        run = LoadRun(spec("/v1/usage", "POST", c, a.duration), tool, run_dir).start()
        spy = PySpy(srv.pid, a.duration - 1, OUT / f"profile-{label}") if a.profile and c == top else None
        debit = run.finish()
        if spy is not None:
            profile = spy.finish()
        log(f"  {debit['ok_per_s']:.0f} debits/s, p99 {debit['p99_ms']} ms, errors {debit['errors']}")
        ratio = debit["ok_per_s"] / base["rps"] if base["rps"] else None
        rows.append({"connections": c, "baseline": base, "debit": debit, "ratio": ratio})
    return {"tool": tool, "duration": a.duration, "rows": rows, "profile": profile}


class PySpy:
    """``py-spy record`` (raw collapsed stacks) of the server for a few seconds, when installed."""

    RATE = 200

    def __init__(self, pid: int, seconds: float, stem: Path) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        self.path = stem.with_suffix(".txt")
        self.seconds = max(1, int(seconds))
        self.proc: subprocess.Popen[bytes] | None = None
        if Path(exe).exists():
            # --gil: sample only the thread holding the GIL, i.e. where the server's Python CPU goes
            cmd = [exe, "record", "--pid", str(pid), "--duration", str(self.seconds), "--gil"]
            cmd += ["--rate", str(self.RATE), "--format", "raw", "--threads", "-o", str(self.path)]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        else:
            log("py-spy not found (`.venv/bin/pip install py-spy`): no profile")

    def finish(self) -> dict[str, Any] | None:
        if self.proc is None or self.proc.wait(timeout=120) != 0 or not self.path.exists():
            return None
        summary = summarize_profile(self.path)
        # samples taken / samples possible: how much of the time some thread held the GIL
        summary["gil_busy_pct"] = round(100 * summary["samples"] / (self.RATE * self.seconds), 1)
        return summary


def summarize_profile(path: Path, top: int = 15) -> dict[str, Any]:
    """GIL holders by thread, and the functions most often on the stack (inclusive) and on top (self)."""
    inclusive: Counter[str] = Counter()
    leaf: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        frames = stack.split(";")
        total += count
        threads[frames[0]] += count
        for f in set(frames[1:]):
            inclusive[_short(f)] += count
        leaf[_short(frames[-1])] += count
    pct = lambda c: round(100 * c / total, 1) if total else 0.0  # noqa: E731
    return {
        "file": str(path.relative_to(REPO)),
        "samples": total,
        "threads": [(t.split(": ", 1)[-1], pct(c)) for t, c in _by_name(threads).most_common(6)],
        "inclusive": [(f, pct(c)) for f, c in inclusive.most_common(60) if "tollkeep" in f][:top],
        "self": [(f, pct(c)) for f, c in leaf.most_common(top)],
    }


def _by_name(threads: Counter[str]) -> Counter[str]:
    # "thread (0x7f..): AnyIO worker thread" x N -> one row per thread name
    out: Counter[str] = Counter()
    for t, c in threads.items():
        out[t.split(": ", 1)[-1] if ": " in t else t] += c
    return out


def _short(frame: str) -> str:
    # "func (path/to/module.py:123)" -> "func (module.py)" so lines of one function add up
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rstrip(")")
    parts = file.split("/")
    file = "/".join(parts[parts.index("tollkeep") :]) if "tollkeep" in parts else parts[-1]
    return f"{name} ({file})"


# ---- (c) durability ---------------------------------------------------------------------------------
def bench_durability(
    srv: Server, a: argparse.Namespace, tool: str, run_dir: Path, label: str
) -> dict[str, Any]:
    conns = max(a.conns)
    scenarios = []
    for name, kill_during in (("kill -9 right after the burst", False), ("kill -9 during the burst", True)):
        cid, key = srv.new_customer("durability")
        spec = LoadSpec(srv.base, "/v1/usage", "POST", conns, a.burst, key=key, threads=a.wrk_threads)
        log(f"{label}: durability: {name} ({conns} connections, {a.burst:g}s)")
        run = LoadRun(spec, tool, run_dir).start()
        if kill_during:
            time.sleep(a.burst * 0.6)
            srv.kill9()
            killed_after = time.perf_counter() - run.started
            res = run.finish()
        else:
            res = run.finish()
            srv.kill9()
            killed_after = time.perf_counter() - run.started
        restart = srv.start()
        via_api = srv.count_usage_via_api(cid)
        via_sql = count_usage_via_sql(srv.database_url, cid)
        acked = res["ok"]
        ok = via_api >= acked and via_sql >= acked
        log(f"  acknowledged {acked}, in the database after restart {via_sql}: {'ok' if ok else 'LOST'}")
        scenarios.append(
            {
                "scenario": name,
                "connections": conns,
                "killed_after_s": round(killed_after, 2),
                "acknowledged": acked,
                "non200": res["non200"],
                "transport_errors": res["transport_errors"],
                "events_via_api": via_api,
                "events_via_sql": via_sql,
                "unacknowledged_but_committed": via_sql - acked,
                "restart_s": round(restart, 2),
                "ok": ok,
            }
        )
    return {"scenarios": scenarios}


# ---- one database -----------------------------------------------------------------------------------
def bench_database(
    name: str,
    inproc_url: str,
    wallets_url: str,
    http_url: str,
    holds_url: str,
    a: argparse.Namespace,
    tool: str,
    run_dir: Path,
) -> dict[str, Any]:
    result: dict[str, Any] = {"name": name}
    log(f"{name}: in-process debits ({a.debits} per run, 1 and 16 threads)")
    result["inprocess"] = bench_inprocess(inproc_url, n=a.debits, max_seconds=max(20.0, a.duration * 3))
    for r in result["inprocess"]["runs"]:
        log(f"  {r['threads']:>2} threads: {r['ops_per_s']:.0f} debits/s")
    log(f"{name}: in-process hold+settle and hold+release vs debits (bench/holds.py)")
    result["holds"] = bench_holds(holds_url, n=min(a.debits, 1000), max_seconds=max(20.0, a.duration * 3))
    for r in result["holds"]["runs"]:
        log(f"  {r['threads']:>2} threads: {r['mode']} {r['ops_per_s']:.0f}/s ({r['vs_debit']}x debit)")
    if a.sizes:
        log(f"{name}: in-process debits in wallets of {', '.join(map(str, a.sizes))} live grants")
        result["wallet_sizes"] = bench_wallet_sizes(
            wallets_url, n=a.debits, sizes=a.sizes, max_seconds=max(20.0, a.duration * 3)
        )
        for r in result["wallet_sizes"]["runs"]:
            ratio = f" ({r['vs_1_grant']:.2f}x 1 grant)" if r["vs_1_grant"] is not None else ""
            log(f"  {r['grants']:>6} grants: {r['ops_per_s']:.0f} debits/s{ratio}, filled in {r['setup_s']}s")
    token = "tka_bench_" + secrets.token_urlsafe(16)
    srv = Server(http_url, token, run_dir, f"server-{name}.log")
    try:
        log(f"{name}: starting `tollkeep serve`")
        srv.start()
        result["http"] = bench_http(srv, a, tool, run_dir, name)
        result["durability"] = bench_durability(srv, a, tool, run_dir, name)
    finally:
        srv.stop()
    log(f"{name}: tollkeep ledger verify")
    v = ledger_verify(http_url, run_dir)
    result["durability"]["verify"] = v
    result["durability"]["ok"] = v["exit_code"] == 0 and all(
        s["ok"] for s in result["durability"]["scenarios"]
    )
    log(f"  exit {v['exit_code']}: {v['output'][-1] if v['output'] else ''}")
    return result


def postgres_schema(url: str) -> tuple[Any, str, str] | None:
    """A fresh schema on the server, or None when it does not answer."""
    try:
        import psycopg

        conn = psycopg.connect(url, connect_timeout=3, autocommit=True)
    except Exception as exc:
        log(f"PostgreSQL at {url} not available ({type(exc).__name__}): skipped")
        return None
    schema = f"bench_{secrets.token_hex(4)}"
    conn.execute(f"CREATE SCHEMA {schema}")
    version = conn.execute("SHOW server_version").fetchone()[0]
    sync = conn.execute("SHOW synchronous_commit").fetchone()[0]
    fsync = conn.execute("SHOW fsync").fetchone()[0]
    version += f"; synchronous_commit={sync}, fsync={fsync}"
    sep = "&" if "?" in url else "?"
    return conn, f"{url}{sep}options=-csearch_path%3D{schema}", f"{schema} (PostgreSQL {version})"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.render_only:
        results = json.loads((OUT / "results.json").read_text())
        results["targets"] = report.targets(results)
        a.out.write_text(report.render(results))
        log(f"wrote {a.out} from {(OUT / 'results.json').relative_to(REPO)}")
        return 0
    t0 = time.perf_counter()
    for old in OUT.glob("profile-*.txt"):
        old.unlink()
    run_dir = OUT / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    meta = machine.describe()
    meta["loadavg_start"] = machine.loadavg()
    meta["cpu_busy_start_pct"] = machine.cpu_busy()
    loadgen = {"tool": "python-httpx", "note": "--python-loadgen given", "installed_now": False}
    if not a.python_loadgen:
        loadgen = ensure_wrk()
    tool = "wrk" if loadgen["tool"] == "wrk" else "python"
    log(f"load generator: {loadgen.get('version') or loadgen['tool']} {loadgen.get('note') or ''}")
    results: dict[str, Any] = {
        "meta": meta,
        "loadgen": loadgen,
        "config": {
            "argv": sys.argv[1:] if argv is None else argv,
            "quick": a.quick,
            "duration_s": a.duration,
            "connections": a.conns,
            "wrk_threads": a.wrk_threads,
            "debits_inprocess": a.debits,
            "wallet_sizes": list(a.sizes),
            "warmup_s": a.warmup,
            "burst_s": a.burst,
        },
        "databases": [],
    }
    results["databases"].append(
        bench_database(
            "sqlite",
            f"sqlite:///{run_dir}/inprocess.db",
            f"sqlite:///{run_dir}/wallets.db",
            f"sqlite:///{run_dir}/http.db",
            f"sqlite:///{run_dir}/holds.db",
            a,
            tool,
            run_dir,
        )
    )
    results["databases"][0]["where"] = f"fresh files in {run_dir.relative_to(REPO)}/"
    if a.no_postgres:
        results["postgres_skipped"] = "--no-postgres"
    elif (pg := postgres_schema(a.postgres_url)) is None:
        results["postgres_skipped"] = f"{a.postgres_url} did not answer"
    else:
        conn, url, where = pg
        try:
            db = bench_database("postgresql", url, url, url, url, a, tool, run_dir)
            db["where"] = f"schema {where}"
            results["databases"].append(db)
        finally:
            conn.execute(f"DROP SCHEMA {where.split()[0]} CASCADE")
            conn.close()
    results["elapsed_s"] = round(time.perf_counter() - t0, 1)
    meta["loadavg_end"] = machine.loadavg()
    results["targets"] = report.targets(results)
    (OUT / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(report.render(results))
    log(f"done in {results['elapsed_s']:.0f}s: wrote {a.out} and {(OUT / 'results.json').relative_to(REPO)}")
    for t in results["targets"]:
        log(f"  {t['target']}: {t['measured']} -> {t['result']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
