"""Holds in-process: a plain debit vs a hold + settle vs a hold + release, in one run.

The gateways' hot path is hold → (upstream call) → settle or release; a plain debit is
``POST /v1/usage``. Each unit below returns only after its commit(s): a debit is one unit of
work, a pair is two (the hold, then its settle or release), each waited for in turn as a
gateway does. Calls carry a buyer API key with a daily spend limit (as the gateways' calls
do), so the per-key spend accounting is in every number.

``python -m bench.holds [--no-postgres] [--n 1000] [--threads 1,16] [--no-write]`` prints the
tables and replaces its own section of ``docs/benchmarks.md`` (:data:`SECTION`); ``bench.run``
runs the same measurement per database and puts it in its report.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.inprocess import run_threads
from bench.sections import write_section
from tollkeep.config import Settings
from tollkeep.ledger.service import UsageRequest
from tollkeep.runtime import Tollkeep

MODES = ("debit", "hold+settle", "hold+release")
ROOT = Path(__file__).resolve().parent.parent
SECTION = "## Holds: hold → settle / release vs a plain debit (bench/holds.py)"


def _op(tk: Tollkeep, cid: str, key_id: str | None, mode: str) -> Callable[[str], None]:
    led = tk.ledger
    if mode == "debit":

        def debit(k: str) -> None:
            led.record_usage(UsageRequest(cid, "api_call", None, k, api_key_id=key_id))

        return debit
    action = "settle" if mode == "hold+settle" else "release"

    def pair(k: str) -> None:
        h = led.create_hold(cid, idempotency_key=k, amount=1, api_key_id=key_id)
        if action == "settle":
            led.resolve_hold(cid, h["id"], action="settle", amount=1)
        else:
            led.resolve_hold(cid, h["id"], action="release")

    return pair


def bench_holds(
    database_url: str, *, n: int, thread_counts: tuple[int, ...] = (1, 16), max_seconds: float = 20.0
) -> dict[str, Any]:
    """Units/s of each mode (a debit; a hold and its settle; a hold and its release), from 1 and
    16 threads, modes interleaved per thread count so they share the machine's mood."""
    tk = Tollkeep(Settings(database_url=database_url, run_workers=False))
    try:
        c = tk.customers.create(f"bench-holds-{secrets.token_hex(4)}")
        cid = c["id"]
        tk.ledger.grant(cid, 10**12, source="purchase", idempotency_key="bench-grant")
        key = tk.keys.create(cid, force_new=True, limits={"spend_limit_daily": 10**12})
        key_id = key["id"]
        fns = {m: _op(tk, cid, key_id, m) for m in MODES}
        for m in MODES:  # warm-up (imports, statement caches)
            for i in range(20):
                fns[m](f"warm-{m}-{i}")
        rows = []
        for t in thread_counts:
            for m in MODES:
                rows.append({"mode": m, **run_threads(fns[m], t, n, max_seconds)})
        for t in thread_counts:
            base = next(r["ops_per_s"] for r in rows if r["threads"] == t and r["mode"] == "debit")
            for r in rows:
                if r["threads"] == t:
                    r["vs_debit"] = round(r["ops_per_s"] / base, 3) if base else None
        return {"units": n, "runs": rows}
    finally:
        tk.close()


def table(result: dict[str, Any]) -> list[str]:
    """Markdown rows: units/s of each mode, and its share of the debit rate of the same run (a
    pair is two units of work and two commits: 0.5 is a pair costing two debits)."""
    out = ["| threads | unit | units/s | vs debit | units | errors |", "|---:|---|---:|---:|---:|---:|"]
    for r in result["runs"]:
        err = str(r["errors"]) + (f" ({r['first_error']})" if r["first_error"] else "")
        out.append(
            f"| {r['threads']} | {r['mode']} | **{r['ops_per_s']:,.0f}** | {r['vs_debit']} "
            f"| {r['ops']} | {err} |"
        )
    return out


def render(results: dict[str, Any], argv: list[str], load: tuple[Any, Any]) -> str:
    lines = [
        SECTION + "\n",
        f"`{' '.join(['python -m bench.holds', *argv])}` on "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average {load[0]:.2f} at the start, "
        f"{load[1]:.2f} at the end (a shared machine: compare rows of one run only). In-process "
        "(`Tollkeep(run_workers=False)`), one customer, every call with a buyer API key that has a "
        "daily spend limit (as the gateways' calls are). A unit: a debit (`record_usage`), or a "
        "hold of 1 credit then its settle for 1 (or its release), each call waiting for its commit "
        "as a gateway does. A pair is two units of work and two commits, so 0.5 of the debit rate "
        "is a pair costing what two debits cost.\n",
    ]
    for db, r in results.items():
        lines.append(f"**{'SQLite' if db == 'sqlite' else 'PostgreSQL'}**\n")
        lines.extend(table(r))
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="units per run (default 1000)")
    p.add_argument("--threads", default="1,16")
    p.add_argument("--seconds", type=float, default=20.0, help="time cap per run")
    p.add_argument("--no-postgres", action="store_true")
    p.add_argument("--no-sqlite", action="store_true")
    p.add_argument("--postgres-url", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-write", action="store_true", help="do not touch docs/benchmarks.md")
    a = p.parse_args(argv)
    load_start = os.getloadavg()[0]
    threads = tuple(int(x) for x in a.threads.split(","))
    results: dict[str, Any] = {}
    if not a.no_sqlite:
        with tempfile.TemporaryDirectory() as d:
            results["sqlite"] = bench_holds(
                f"sqlite:///{d}/holds.db", n=a.n, thread_counts=threads, max_seconds=a.seconds
            )
    if not a.no_postgres:
        from bench.run import postgres_schema

        pg = postgres_schema(a.postgres_url)
        if pg is None:
            print(f"PostgreSQL at {a.postgres_url} does not answer: skipped", file=sys.stderr)
        else:
            conn, url, where = pg
            try:
                results["postgresql"] = bench_holds(url, n=a.n, thread_counts=threads, max_seconds=a.seconds)
            finally:
                conn.execute(f"DROP SCHEMA {where.split()[0]} CASCADE")
                conn.close()
    if a.json:
        print(json.dumps(results, indent=2))
    text = render(results, sys.argv[1:] if argv is None else argv, (load_start, os.getloadavg()[0]))
    print(text)
    if not a.no_write:
        write_section(SECTION, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
