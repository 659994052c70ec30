"""``python -m bench.gateway_http``: a call through the HTTP gateway vs the same call straight to
the upstream, in one run, on SQLite (not part of ``make bench``).

* a priced route (``GET /item``, 1 credit, hold → forward → settle, durable) under wrk at 1, 16
  and 64 connections, through ``tollkeep gateway http`` and direct;
* time to first token of a streamed chat completion (sequential, httpx), through and direct.

The upstream is a minimal ASGI app under uvicorn in a process of its own. After the run the
balance must have moved by exactly the number of 200s through the gateway, and the ledger
verifies. Prints a markdown table and writes bench/out/gateway_http.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import LoadSpec, ensure_wrk, run_load

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "bench" / "out"

ITEM = b'{"id": 1, "name": "item"}'
CHUNK = b'data: {"choices": [{"index": 0, "delta": {"content": "abcd"}}]}\n\n'
USAGE = b'data: {"choices": [], "usage": {"prompt_tokens": 2, "completion_tokens": 8}}\n\ndata: [DONE]\n\n'


async def upstream_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """GET /item: a small JSON answer; POST /v1/chat/completions: an SSE stream of 8 chunks."""
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    if scope["path"] == "/item":
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(ITEM)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": ITEM})
        return
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]}
    )
    for _ in range(8):
        await send({"type": "http.response.body", "body": CHUNK, "more_body": True})
    await send({"type": "http.response.body", "body": USAGE})


def _wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited ({proc.returncode})")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ttft(url: str, key: str | None, n: int) -> dict[str, float]:
    """Time to the first content chunk of ``n`` sequential streamed completions (ms)."""
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "hi"}],
    }
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    times = []
    with httpx.Client(base_url=url, timeout=30) as c:
        for i in range(n + 10):
            t0 = time.perf_counter()
            with c.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
                assert r.status_code == 200, r.read()
                first = None
                for chunk in r.iter_raw():
                    if first is None and b"content" in chunk:
                        first = (time.perf_counter() - t0) * 1000
                if i >= 10 and first is not None:  # after a warm-up
                    times.append(first)
    times.sort()
    return {
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(times[int(len(times) * 0.99) - 1], 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_http", description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    p.add_argument("--connections", default="1,16,64")
    p.add_argument("--ttft", type=int, default=200, help="streamed requests for the time to first token")
    p.add_argument("--serve-upstream", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_upstream:
        import uvicorn

        uvicorn.run(
            upstream_app, host="127.0.0.1", port=a.serve_upstream, log_level="warning", access_log=False
        )
        return 0
    ensure_wrk()
    from tollkeep.config import Settings
    from tollkeep.runtime import Tollkeep

    work = Path(tempfile.mkdtemp(prefix="tk-gw-bench-"))
    db = f"sqlite:///{work / 'tollkeep.db'}"
    tk = Tollkeep(Settings(database_url=db, run_workers=False))
    cid = tk.customers.create("bench")["id"]
    key = tk.keys.create(cid)["key"]
    tk.ledger.grant(cid, 10**12, idempotency_key="bench")
    tk.close()
    env = {
        **os.environ,
        "TOLLKEEP_DATABASE_URL": db,
        "TOLLKEEP_RUN_WORKERS": "false",
        "TOLLKEEP_RATE_LIMIT_USAGE": "off",
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    up_port, gw_port = _free_port(), _free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "bench.gateway_http", "--serve-upstream", str(up_port)], env=env, cwd=REPO
    )
    gw = subprocess.Popen(
        [
            *(sys.executable, "-m", "tollkeep", "gateway", "http"),
            *("--upstream", f"http://127.0.0.1:{up_port}", "--port", str(gw_port), "--price", "GET /item=1"),
        ],
        env=env,
        cwd=work,
        stdout=subprocess.DEVNULL,
    )
    results: dict[str, Any] = {"rows": [], "ttft": {}}
    try:
        direct, through = f"http://127.0.0.1:{up_port}", f"http://127.0.0.1:{gw_port}"
        _wait(direct + "/item", up)
        _wait(through + "/_tollkeep/health", gw)
        ok_through = 0
        for c in [int(x) for x in a.connections.split(",")]:
            row: dict[str, Any] = {"connections": c}
            for label, base, k in (("direct", direct, ""), ("gateway", through, key)):
                r = run_load(LoadSpec(base, "/item", "GET", c, a.duration, key=k), "wrk", work)
                row[label] = {x: r[x] for x in ("rps", "ok_per_s", "p50_ms", "p99_ms", "errors", "ok")}
                if label == "gateway":
                    ok_through += r["ok"]
                print(
                    f"{label:8} c={c:<3} {r['ok_per_s']:>8} ok/s  p50 {r['p50_ms']} ms  p99 {r['p99_ms']} ms",
                    file=sys.stderr,
                )
            results["rows"].append(row)
        results["ttft"] = {"direct": ttft(direct, None, a.ttft), "gateway": ttft(through, key, a.ttft)}
    finally:
        for proc in (gw, up):
            proc.terminate()
            proc.wait(timeout=30)
    tk = Tollkeep(Settings(database_url=db, run_workers=False))
    try:
        spent = 10**12 - int(tk.balance(cid)["balance"])
        streamed = a.ttft + 10
        results["charged"] = spent
        results["expected_charge"] = {"item_200s": ok_through, "streams": streamed}
        results["verify_ok"] = tk.verify().ok
    finally:
        tk.close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "gateway_http.json").write_text(json.dumps(results, indent=2))
    print(render(results))
    return 0 if results["verify_ok"] else 1


def render(r: dict[str, Any]) -> str:
    lines = [
        "| clients | direct ok/s | gateway ok/s | direct p50 / p99 ms | gateway p50 / p99 ms | added p50 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in r["rows"]:
        d, g = row["direct"], row["gateway"]
        lines.append(
            f"| {row['connections']} | {d['ok_per_s']:.0f} | {g['ok_per_s']:.0f} "
            f"| {d['p50_ms']} / {d['p99_ms']} | {g['p50_ms']} / {g['p99_ms']} "
            f"| {g['p50_ms'] - d['p50_ms']:.2f} ms |"
        )
    t = r["ttft"]
    lines.append("")
    lines.append(
        f"time to first token (sequential): direct p50 {t['direct']['p50_ms']} ms, "
        f"gateway p50 {t['gateway']['p50_ms']} ms (p99 {t['direct']['p99_ms']} / {t['gateway']['p99_ms']} ms)"
    )
    lines.append(
        f"charged {r['charged']} credits for {r['expected_charge']['item_200s']} priced 200s and "
        f"{r['expected_charge']['streams']} streams; ledger verify: {'ok' if r['verify_ok'] else 'FAILED'}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
