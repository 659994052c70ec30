"""`tollkeep demo`'s gateways: the demo's MCP server behind `tollkeep gateway mcp` and its HTTP
API behind `tollkeep gateway http`, each the real command in a process of its own, on the
demo's database — so the demo shows an agent's calls charged exactly as a seller would run it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DemoGateways", "start"]

OFFSET = 100  # the gateways listen on PORT+100 (MCP), +101 (HTTP) and +102 (the API itself)


@dataclass
class DemoGateways:
    mcp_url: str
    http_url: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 8
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)

    def examples(self) -> str:
        """Paste-able lines (each at most 80 columns), using $KEY from the exports above."""
        return f"""Behind the gateways (2 credits per forecast, 1 per quote; cities is free):

export MCP={self.mcp_url}
export API={self.http_url}

curl -s $API/quotes/1 -H "Authorization: Bearer $KEY"
curl -s $MCP -H "Authorization: Bearer $KEY" \\
  -H 'Content-Type: application/json' \\
  -H 'Accept: application/json, text/event-stream' \\
  -H 'MCP-Protocol-Version: 2026-07-28' \\
  -H 'Mcp-Method: tools/call' -H 'Mcp-Name: forecast' \\
  -d '{{"jsonrpc": "2.0", "id": 1, "method": "tools/call",
       "params": {{"name": "forecast", "arguments": {{"city": "Paris"}},
         "_meta": {{"io.modelcontextprotocol/protocolVersion": "2026-07-28",
           "io.modelcontextprotocol/clientCapabilities": {{}}}}}}}}'
curl -s $BASE/v1/balance -H "Authorization: Bearer $KEY"
"""


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def start(db_file: Path, port: int, log: Path, *, timeout: float = 60.0) -> DemoGateways | None:
    """Start the three processes and wait until they listen; None (nothing left running) if a
    port is taken or one of them does not come up (its output is in ``log``)."""
    mcp_port, http_port, api_port = port + OFFSET, port + OFFSET + 1, port + OFFSET + 2
    from tollkeep.cli.main import port_free  # the check the demo makes of its own port

    if not all(port_free("127.0.0.1", p) for p in (mcp_port, http_port, api_port)):
        return None
    env = {**os.environ, "TOLLKEEP_DATABASE_URL": f"sqlite:///{db_file.resolve()}"}
    env.pop("TOLLKEEP_CATALOG_PATH", None)
    tk = [sys.executable, "-m", "tollkeep"]
    commands = [
        [sys.executable, "-m", "tollkeep.demo.quotes_api", str(api_port)],
        [
            *tk,
            "gateway",
            "http",
            "--upstream",
            f"http://127.0.0.1:{api_port}",
            "--port",
            str(http_port),
            "--price",
            "GET /quotes/{n}=1",
            "--upstream-header",
            "X-Upstream-Auth: the-sellers-own-secret",
        ],
        [
            *tk,
            "gateway",
            "mcp",
            "--port",
            str(mcp_port),
            "--price",
            "forecast=2",
            "--price",
            "cities=0",
            "--",
            sys.executable,
            "-m",
            "tollkeep.demo.weather_mcp",
        ],
    ]
    out = log.open("ab")
    gws = DemoGateways(f"http://127.0.0.1:{mcp_port}/mcp", f"http://127.0.0.1:{http_port}")
    try:
        for cmd in commands:
            # through demo/child.py: each dies with the demo, however the demo ends
            wrapped = [sys.executable, "-m", "tollkeep.demo.child", *cmd]
            gws.procs.append(subprocess.Popen(wrapped, env=env, stdout=out, stderr=subprocess.STDOUT))
    finally:
        out.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in gws.procs):
            break
        if all(_listening(p) for p in (mcp_port, http_port, api_port)):
            return gws
        time.sleep(0.1)
    gws.stop()
    return None
