"""Payments benchmark: webhook receive (verify + store + 2xx) under concurrent deliveries, and
the inbox worker turning stored events into grants - each against a baseline in the same run.

    python -m bench.payments [--requests 4000] [--concurrency 32] [--postgres URL]

* receive: real GitHub ``marketplace_purchase`` deliveries (HMAC-SHA256 signed, distinct
  delivery ids) POSTed by 32 concurrent clients to a real ``tollkeep serve`` (workers off, so
  the numbers are the receive path alone), next to ``GET /healthz`` with the same load
  generator: the ratio is what verifying and storing costs.
* process: the stored events applied by ``Inbox.process`` (the ``payments.inbox`` job) in this
  process: events/s into grants + customers + plan changes, next to the same number of plain
  admin grants (``LedgerService.grant``) as the baseline.

Writes its section into docs/benchmarks.md (replacing an earlier one) and prints it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from bench.machine import describe as describe_machine
from bench.server import VENV_BIN, free_port

ROOT = Path(__file__).resolve().parents[1]
SECRET = "bench-github-secret"
ADMIN = "bench-admin-token-0123456789abcdef0123"
SECTION = "## Payments: webhook receive and inbox processing (bench/payments.py)"
CATALOG = """
[credits]
unit = "credit"
[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1
[packs.starter]
credits = 1000
prices = { usd = 500 }
[plans.basic]
prices = { usd = 1000 }
github_plan_id = 435
[plans.basic.allowance]
amount = 5000
period = "month"
"""


def delivery(i: int) -> tuple[bytes, dict[str, str]]:
    payload = {
        "action": "purchased",
        "effective_date": "2026-11-01T00:00:00+00:00",
        "sender": {"login": "octocat", "id": 1, "type": "User"},
        "marketplace_purchase": {
            "account": {"type": "Organization", "id": 100_000 + i, "login": f"org{i}"},
            "billing_cycle": "monthly",
            "unit_count": 1,
            "on_free_trial": False,
            "free_trial_ends_on": None,
            "next_billing_date": "2026-12-01T00:00:00+00:00",
            "plan": {
                "id": 435,
                "name": "Basic Plan",
                "description": "Basic",
                "monthly_price_in_cents": 1000,
                "yearly_price_in_cents": 10000,
                "price_model": "FLAT_RATE",
                "has_free_trial": False,
                "unit_name": None,
                "bullets": [],
            },
        },
    }
    body = json.dumps(payload).encode()
    return body, {
        "Content-Type": "application/json",
        "X-GitHub-Event": "marketplace_purchase",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }


Request = tuple[bytes | None, dict[str, str]]


async def load(url: str, requests: list[Request], concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    queue = list(reversed(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def worker() -> None:
            nonlocal errors
            while queue:
                body, headers = queue.pop()
                t0 = time.perf_counter()
                if body is None:
                    r = await client.get(url)
                else:
                    r = await client.post(url, content=body, headers=headers)
                latencies.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors += 1

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = sorted(latencies)
    return {
        "requests": len(lat),
        "errors": errors,
        "rps": len(lat) / wall,
        "p50_ms": statistics.median(lat) * 1000,
        "p99_ms": lat[int(len(lat) * 0.99) - 1] * 1000,
    }


def serve(db_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLKEEP_")}
    env.update(
        TOLLKEEP_DATABASE_URL=db_url,
        TOLLKEEP_ADMIN_TOKEN=ADMIN,
        TOLLKEEP_GITHUB_WEBHOOK_SECRET=SECRET,
        TOLLKEEP_CATALOG_PATH=str(workdir / "catalog.toml"),
        TOLLKEEP_RUN_WORKERS="false",
    )
    proc = subprocess.Popen(
        [str(VENV_BIN / "tollkeep"), "serve", "--port", str(port), "--log-level", "warning"],
        cwd=workdir,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


def bench_db(label: str, db_url: str, workdir: Path, n: int, concurrency: int) -> dict[str, Any]:
    (workdir / "catalog.toml").write_text(CATALOG)
    proc, base = serve(db_url, workdir)
    try:
        warm = [delivery(10_000_000 + i) for i in range(200)]
        asyncio.run(load(f"{base}/webhooks/github", list(warm), concurrency))
        health = asyncio.run(load(f"{base}/healthz", [(None, {})] * n, concurrency))
        bodies = [delivery(i) for i in range(n)]
        receive = asyncio.run(load(f"{base}/webhooks/github", bodies, concurrency))
        dup = asyncio.run(load(f"{base}/webhooks/github", bodies[: n // 4], concurrency))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    sys.path.insert(0, str(ROOT / "src"))
    from tollkeep.config import Settings
    from tollkeep.runtime import Tollkeep

    settings = Settings(
        database_url=db_url,
        admin_token=ADMIN,
        github_webhook_secret=SECRET,
        catalog_path=workdir / "catalog.toml",
        run_workers=False,
        migrate_on_start=False,
    )
    tk = Tollkeep(settings)
    try:
        pending = n + len(warm)
        t0 = time.perf_counter()
        processed = 0
        while True:
            step = tk.inbox.process(limit=500)
            if not step:
                break
            processed += step.get("processed", 0)
        process_s = time.perf_counter() - t0
        cids = [tk.customers.create(f"bench-base-{label}-{i}")["id"] for i in range(50)]
        t0 = time.perf_counter()
        futures = [
            tk.executor.submit(tk.ledger.grant_fn(cids[i % 50], 1000, idempotency_key=f"b{i}"))
            for i in range(pending)
        ]
        for f in futures:
            f.result()
        grant_s = time.perf_counter() - t0
        verify = tk.verify()
    finally:
        tk.close()
    return {
        "label": label,
        "health": health,
        "receive": receive,
        "duplicates": dup,
        "processed": processed,
        "process_rps": processed / process_s,
        "grant_rps": pending / grant_s,
        "verify_ok": verify.ok,
    }


def render(results: list[dict[str, Any]], args: argparse.Namespace) -> str:
    m = describe_machine()
    machine = f"{m['date']}, commit {m['git_commit']}, {m['nproc']} cores ({m['cpu']}), Python {m['python']}"
    lines = [
        SECTION,
        "",
        f"{machine}. {args.requests} signed GitHub `marketplace_purchase` deliveries, "
        f"{args.concurrency} concurrent clients (httpx, in the benchmark process), against `tollkeep serve` "
        "with its workers off; then the stored events processed by `Inbox.process` in the benchmark process.",
        "",
        "| database | GET /healthz (baseline) | webhook receive | ratio | receive p50 / p99 "
        "| duplicate deliveries | inbox → grants + plans | plain grants (baseline) | ledger verify |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        h, rc, d = r["health"], r["receive"], r["duplicates"]
        lines.append(
            f"| {r['label']} | {h['rps']:,.0f}/s | {rc['rps']:,.0f}/s ({rc['errors']} errors) | "
            f"{rc['rps'] / h['rps']:.2f} | {rc['p50_ms']:.1f} / {rc['p99_ms']:.1f} ms | {d['rps']:,.0f}/s | "
            f"{r['process_rps']:,.0f} events/s ({r['processed']}) | {r['grant_rps']:,.0f}/s | "
            f"{'ok' if r['verify_ok'] else 'FAILED'} |"
        )
    lines += [
        "",
        "Targets (issue #8, SQLite): receive p99 under 20 ms at 32 concurrent deliveries and at least 1,000 "
        "deliveries/s; the inbox worker at least 500 events/s into grants. Each processed event here "
        "makes a customer, links the GitHub account, changes the plan (granting its allowance), records "
        "the payment and the funnel stage and writes a `payment.succeeded` outbox row, in one "
        "transaction with the inbox row; the baseline is one plain grant per operation.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str) -> None:
    path = ROOT / "docs" / "benchmarks.md"
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(SECTION) + r".*?(?=\n## |\Z)", re.S)
    doc = pattern.sub("", doc).rstrip() + "\n\n" + text
    path.write_text(doc)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{tmp}/bench.db"
        results.append(bench_db("SQLite", sqlite, Path(tmp), args.requests, args.concurrency))
    try:
        import psycopg

        raw = args.postgres.replace("+psycopg", "")
        schema = "bench_payments"
        with psycopg.connect(raw, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
            c.execute(f"CREATE SCHEMA {schema}")
        url = f"{args.postgres}?options=-csearch_path%3D{schema}"
        with tempfile.TemporaryDirectory() as tmp:
            results.append(bench_db("PostgreSQL", url, Path(tmp), args.requests, args.concurrency))
        with psycopg.connect(raw, autocommit=True) as c:
            c.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    except Exception as exc:  # PostgreSQL absent: SQLite alone, and said so
        print(f"PostgreSQL not benchmarked: {exc}", file=sys.stderr)
    text = render(results, args)
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
