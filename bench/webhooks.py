"""``python -m bench.webhooks``: outbound webhook delivery throughput to a local receiver,
against a baseline of the same number of plain signed POSTs sent with httpx straight to it.

The receiver runs in a process of its own (a ThreadingHTTPServer answering 200), so it does not
share the GIL with the sender being measured. Steps, on a fresh SQLite database (or
``--database-url``):

1. **fan-out**: N outbox messages handed to the webhooks sink (``WebhookService.fan_out``, the
   function the outbox dispatcher calls), one delivery row each;
2. **deliver**: ``WebhookService.deliver()`` batch after batch until nothing is due: claim
   (a lease in one transaction), sign, POST concurrently, record each outcome and its attempt
   log entry (one transaction per batch);
3. **baseline**: N POSTs of the same bodies, signed with standardwebhooks, by a thread pool of
   the same size over one httpx.Client: what the network and the receiver cost by themselves.

Prints a markdown table (and ``--json`` writes the numbers).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

TARGET = 200.0  # deliveries/s on SQLite


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512


def _serve(port: int) -> None:
    _Server(("127.0.0.1", port), _Handler).serve_forever()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_up(url: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            httpx.post(url, content=b"{}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise RuntimeError("the receiver did not start")


def bench(n: int, concurrency: int, database_url: str | None) -> dict[str, Any]:
    from standardwebhooks import Webhook

    from tollkeep.config import Settings
    from tollkeep.kit.actor import Actor, Role
    from tollkeep.kit.ids import new_id
    from tollkeep.outbox import OutboxMessage
    from tollkeep.runtime import Tollkeep

    port = _free_port()
    receiver = multiprocessing.get_context("spawn").Process(target=_serve, args=(port,), daemon=True)
    receiver.start()
    url = f"http://127.0.0.1:{port}/hook"
    tmp = tempfile.TemporaryDirectory(prefix="tollkeep-bench-webhooks-")
    try:
        _wait_up(url)
        db = database_url or f"sqlite:///{Path(tmp.name) / 'bench.db'}"
        settings = Settings(
            database_url=db, run_workers=False, webhooks_allow_private=True, webhooks_concurrency=concurrency
        )
        with Tollkeep(settings) as tk:
            ep = tk.webhooks.create(url, actor=Actor("admin", "bench", Role.ADMIN))
            now = tk.clock.now()
            messages = [
                OutboxMessage(
                    new_id("evt"), "credits.granted", None, {"customer_id": "cus_bench", "amount": i}, now, 1
                )
                for i in range(n)
            ]
            t0 = time.perf_counter()
            for m in messages:
                tk.webhooks.fan_out(m)
            fan_out_s = time.perf_counter() - t0

            t0 = time.perf_counter()
            delivered = 0
            while True:
                done = tk.webhooks.deliver()
                delivered += done["delivered"]
                if not any(done.values()):
                    break
            deliver_s = time.perf_counter() - t0
            failed = n - delivered

            # the baseline: the same bodies, signed, straight to the receiver
            bodies = [
                json.dumps(
                    {"type": m.topic, "timestamp": now.isoformat(), "data": m.payload}, separators=(",", ":")
                )
                for m in messages
            ]
            hook = Webhook(ep["secret"])
            with httpx.Client(
                timeout=10,
                limits=httpx.Limits(max_connections=concurrency * 2, max_keepalive_connections=concurrency),
            ) as client:

                def post(i: int) -> int:
                    when = datetime.now(UTC)
                    headers = {
                        "webhook-id": messages[i].id,
                        "webhook-timestamp": str(int(when.timestamp())),
                        "webhook-signature": hook.sign(messages[i].id, when, bodies[i]),
                        "content-type": "application/json",
                    }
                    return client.post(url, content=bodies[i].encode(), headers=headers).status_code

                with ThreadPoolExecutor(concurrency) as pool:
                    t0 = time.perf_counter()
                    statuses = list(pool.map(post, range(n)))
                    baseline_s = time.perf_counter() - t0
    finally:
        receiver.kill()
        receiver.join(5)
        tmp.cleanup()
    return {
        "n": n,
        "concurrency": concurrency,
        "database": "postgresql" if database_url and database_url.startswith("postgres") else "sqlite",
        "fan_out_per_s": n / fan_out_s,
        "fan_out_s": fan_out_s,
        "deliver_per_s": delivered / deliver_s,
        "deliver_s": deliver_s,
        "delivered": delivered,
        "failed": failed,
        "baseline_per_s": n / baseline_s,
        "baseline_s": baseline_s,
        "baseline_ok": sum(1 for s in statuses if s == 200),
        "cpus": os.cpu_count(),
        "load": os.getloadavg()[0],
    }


def _row(step: str, seconds: float, rate: float) -> str:
    return f"| {step} | {seconds:.2f} | {rate:.0f} |"


def render(r: dict[str, Any]) -> str:
    ratio = r["deliver_per_s"] / r["baseline_per_s"] if r["baseline_per_s"] else 0
    verdict = "met" if r["deliver_per_s"] >= TARGET else "NOT met"
    return "\n".join(
        [
            f"### Outbound webhooks ({r['database']}, {r['n']} deliveries, {r['concurrency']} at once)",
            "",
            "| step | seconds | per second |",
            "| --- | ---: | ---: |",
            _row("fan-out: outbox message → delivery row", r["fan_out_s"], r["fan_out_per_s"]),
            _row("deliver: claim, sign, POST, record (tollkeep)", r["deliver_s"], r["deliver_per_s"]),
            _row("baseline: signed POSTs with httpx, nothing recorded", r["baseline_s"], r["baseline_per_s"]),
            "",
            f"Delivered {r['delivered']}/{r['n']} (baseline: {r['baseline_ok']} answered 200); tollkeep's "
            f"delivery runs at {ratio:.0%} of the baseline's rate. Target ≥ {TARGET:.0f} deliveries/s: "
            f"**{verdict}**. Machine: {r['cpus']} CPUs, load average {r['load']:.1f} at the end.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=2000, help="deliveries (default 2000)")
    p.add_argument(
        "--concurrency", type=int, default=16, help="POSTs at once (TOLLKEEP_WEBHOOKS_CONCURRENCY)"
    )
    p.add_argument("--database-url", help="default: a fresh SQLite file")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    a = p.parse_args(argv)
    r = bench(a.n, a.concurrency, a.database_url)
    print(render(r))
    if a.json:
        a.json.write_text(json.dumps(r, indent=2))
    return 0 if r["failed"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
