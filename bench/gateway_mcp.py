"""``python -m bench.gateway_mcp``: the latency of an MCP ``tools/call`` through the billing
gateway (durable hold + settle on SQLite included) against the same call made directly to the
upstream, in one run, with the same client (the official SDK's, 2026-07-28 over streamable
HTTP), one call at a time.

Cases: the upstream over streamable HTTP called directly; the gateway in front of that HTTP
upstream; the gateway in front of the same server as a stdio command; and, as the baseline the
issue names, FastMCP's billing-free proxy (``fastmcp.server.create_proxy``, the ``bench`` extra:
``pip install -e '.[bench]'``) in front of the same two upstreams. Every proxy runs as its own
process, as a user runs it. Writes its section of ``docs/benchmarks.md`` (``--no-write``: don't).
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

from bench.sections import write_section

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


FASTMCP_PROXY = """
import sys
from pathlib import Path

from fastmcp.server.server import create_proxy

target = sys.argv[2]
proxy = create_proxy(target if target.startswith("http") else Path(target))
proxy.run(transport="http", host="127.0.0.1", port=int(sys.argv[1]), show_banner=False, log_level="warning")
"""
SECTION = "## MCP gateway: tools/call through the gateway vs direct vs FastMCP's proxy (bench/gateway_mcp.py)"


def have_fastmcp() -> bool:
    try:
        import fastmcp  # noqa: F401
    except ImportError:
        return False
    return True


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
    p.add_argument("--price", type=int, default=1, help="credits per call (0: a free tool, no ledger writes)")
    p.add_argument("--no-write", action="store_true", help="don't write docs/benchmarks.md")
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
                f"lookup={a.price}",
            ]
            proc = subprocess.Popen(
                [*cmd, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/mcp"
            wait_http(url, proc)
            return url

        def fastmcp_proxy(target: str) -> str:
            port = free_port()
            script = tmp / "fastmcp_proxy.py"
            script.write_text(FASTMCP_PROXY)
            proc = subprocess.Popen(
                [sys.executable, str(script), str(port), target],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)
            url = f"http://127.0.0.1:{port}/mcp"
            wait_http(url, proc)
            return url

        gw_http = gateway("--upstream", up_url)
        gw_stdio = gateway("--", sys.executable, str(server_py))
        cases = [
            ("direct (upstream over streamable HTTP)", up_url, None),
            ("tollkeep gateway -> streamable-HTTP upstream (charged, durable)", gw_http, key),
            ("tollkeep gateway -> stdio upstream (charged, durable)", gw_stdio, key),
        ]
        if have_fastmcp():
            cases += [
                ("FastMCP proxy -> streamable-HTTP upstream (no billing)", fastmcp_proxy(up_url), None),
                ("FastMCP proxy -> stdio upstream (no billing)", fastmcp_proxy(str(server_py)), None),
            ]
        else:
            print("fastmcp is not installed (pip install -e '.[bench]'): no FastMCP baseline", flush=True)
        for name, url, k in cases:
            ms = anyio.run(measure, url, k, a.calls, a.warmup)
            results.append(summary(name, ms))
            print(json.dumps(results[-1]), flush=True)
        with Tollkeep(Settings(database_url=env["TOLLKEEP_DATABASE_URL"])) as tk:
            charged = 10_000_000 - int(tk.balance(cid)["available"])
            ok = tk.verify().ok
        expected = 2 * (a.calls + a.warmup) * a.price
        check = {"charged": charged, "expected": expected, "ledger_verify_ok": ok}
        print(json.dumps(check))
        if not a.no_write:
            write_section(SECTION, render(results, check, a))
    finally:
        for proc in procs:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def render(results: list[dict[str, Any]], check: dict[str, Any], a: argparse.Namespace) -> str:
    load = os.getloadavg()
    lines = [
        SECTION,
        "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load average {load[0]:.2f}; "
        f"`python -m bench.gateway_mcp --calls {a.calls} --price {a.price}`. One `tools/call` at a time "
        "with the official SDK client (2026-07-28, streamable HTTP), each proxy its own process; the "
        "gateway holds and settles the price durably (SQLite) before answering. The FastMCP rows are "
        "the issue's baseline: the same call through a billing-free proxy.",
        "",
        "| case | calls | p50 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['case']} | {r['calls']} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_ms']} |")
    lines += [
        "",
        f"Charged {check['charged']} credits, expected {check['expected']}; ledger verify "
        f"{'ok' if check['ledger_verify_ok'] else 'FAILED'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
