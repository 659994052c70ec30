"""``python -m bench.gateway_mcp``: the latency of an MCP ``tools/call`` through the billing
gateway (durable hold + settle on SQLite included) against the same call made directly to the
upstream, in one run, with the same client (the official SDK's, 2026-07-28 over streamable
HTTP), one call at a time.

Cases: the upstream over streamable HTTP called directly; the gateway in front of that HTTP
upstream; the gateway in front of the same server as a stdio command. The gateway runs as its
own process (``tollkeep gateway mcp``), as a user runs it. Not wired into ``bench/run.py``.
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

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

REPO = Path(__file__).resolve().parent.parent

UPSTREAM = '''
import sys
from mcp.server.mcpserver import MCPServer

server = MCPServer("bench")


@server.tool()
def lookup(key: str) -> dict:
    """A cheap tool: what is measured is the path, not the work."""
    return {"key": key, "value": len(key)}


if __name__ == "__main__":
    if len(sys.argv) > 2:
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
'''


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the process exited ({proc.returncode})")
        try:
            httpx2.get(url, timeout=1)
            return
        except httpx2.HTTPError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not start")


async def measure(url: str, key: str | None, calls: int, warmup: int) -> list[float]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as c,
    ):
        for i in range(warmup):
            await c.call_tool("lookup", {"key": f"w{i}"})
        out = []
        for i in range(calls):
            t0 = time.perf_counter()
            r = await c.call_tool("lookup", {"key": f"k{i}"})
            out.append((time.perf_counter() - t0) * 1000)
            assert not r.is_error
        return out


def summary(name: str, ms: list[float]) -> dict[str, Any]:
    ms = sorted(ms)
    return {
        "case": name,
        "calls": len(ms),
        "p50_ms": round(statistics.median(ms), 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "mean_ms": round(statistics.fmean(ms), 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.gateway_mcp", description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=500)
    p.add_argument("--warmup", type=int, default=50)
    a = p.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="tk-bench-mcp-"))
    server_py = tmp / "bench_upstream.py"
    server_py.write_text(UPSTREAM)
    env = {**os.environ, "TOLLKEEP_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH")) if p)
    env.pop("TOLLKEEP_CATALOG_PATH", None)
    env["TOLLKEEP_RATE_LIMIT_USAGE"] = "off"

    sys.path.insert(0, str(REPO / "src"))
    from tollkeep.config import Settings
    from tollkeep.runtime import Tollkeep

    with Tollkeep(Settings(database_url=env["TOLLKEEP_DATABASE_URL"])) as tk:
        cid = str(tk.customers.create("bench")["id"])
        tk.ledger.grant(cid, 10_000_000, idempotency_key="bench")
        key = str(tk.keys.create(cid)["key"])

    procs: list[subprocess.Popen[bytes]] = []
    results = []
    try:
        up_port = free_port()
        upstream = subprocess.Popen(
            [sys.executable, str(server_py), "http", str(up_port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        procs.append(upstream)
        up_url = f"http://127.0.0.1:{up_port}/mcp"
        wait_http(up_url, upstream)

        def gateway(*args: str) -> str:
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "tollkeep",
                "gateway",
                "mcp",
                "--port",
                str(port),
                "--price",
                "lookup=1",
            ]
            proc = subprocess.Popen(
                [*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/mcp"
            wait_http(url, proc)
            return url

        gw_http = gateway("--upstream", up_url)
        gw_stdio = gateway("--", sys.executable, str(server_py))
        for name, url, k in (
            ("direct (upstream over streamable HTTP)", up_url, None),
            ("gateway -> streamable-HTTP upstream", gw_http, key),
            ("gateway -> stdio upstream", gw_stdio, key),
        ):
            ms = anyio.run(measure, url, k, a.calls, a.warmup)
            results.append(summary(name, ms))
            print(json.dumps(results[-1]), flush=True)
        with Tollkeep(Settings(database_url=env["TOLLKEEP_DATABASE_URL"])) as tk:
            charged = 10_000_000 - int(tk.balance(cid)["available"])
            ok = tk.verify().ok
        expected = 2 * (a.calls + a.warmup)
        print(json.dumps({"charged": charged, "expected": expected, "ledger_verify_ok": ok}))
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
