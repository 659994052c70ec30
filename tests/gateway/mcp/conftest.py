"""The MCP gateway under test: a runtime on SQLite (and PostgreSQL when it answers) with a
catalog pricing the upstream's tools, served by a real uvicorn on a free port, in front of a
real upstream (``upstream_server.py``, the official SDK's server over stdio). The agent is the
official SDK's client. After each test the ledger is verified."""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.conftest import make_settings
from tests.factories import free_port
from tollkeep.api.ratelimit import Limiter
from tollkeep.gateway.core import Charger
from tollkeep.gateway.mcp import McpGateway, Overrides
from tollkeep.gateway.upstream import Upstream, UpstreamSpec
from tollkeep.runtime import Tollkeep

HERE = Path(__file__).resolve().parent
UPSTREAM = HERE / "upstream_server.py"

CATALOG = """
version = "gw-test"

[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1

[meters.results]
aggregation = "sum"
[meters.results.price]
model = "per_unit"
unit_price = 2

[plans.basic]
features = ["basic"]

[plans.pro]
features = ["basic", "pro"]

[gateway]
timeout_seconds = 20

[tools."upstream/search"]
price = 5

[tools."upstream/echo"]
free = true

[tools."upstream/broken"]
price = 3

[tools."upstream/rpc_error"]
price = 3

[tools."upstream/slow"]
price = 2

[tools."upstream/fetch"]
meter = "results"
quantity = "arguments.n"

[tools."upstream/scan"]
meter = "results"
quantity = "result.count"
hold = 10

[tools."upstream/crash"]
price = 1

[tools."upstream/premium"]
price = 4
feature = "pro"
"""


@dataclass
class Served:
    url: str
    tk: Tollkeep
    gateway: McpGateway
    calls_file: Path
    customer_id: str
    key: str

    def upstream_calls(self, tool: str | None = None) -> int:
        if not self.calls_file.exists():
            return 0
        lines = self.calls_file.read_text().split()
        return len(lines) if tool is None else lines.count(tool)

    def available(self, customer_id: str | None = None) -> int:
        return int(self.tk.balance(customer_id or self.customer_id)["available"])

    def customer(self, ext: str, credits: int, plan: str | None = None) -> tuple[str, str]:
        cid = self.tk.customers.create(ext, plan=plan)["id"]
        if credits:
            self.tk.ledger.grant(cid, credits, idempotency_key=f"grant-{ext}")
        key = self.tk.keys.create(cid)["key"]
        return cid, key


@contextmanager
def serve(gateway: McpGateway) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(
        gateway.http_app(host="127.0.0.1"), host="127.0.0.1", port=port, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the gateway did not start"
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture
def gw_options(request: pytest.FixtureRequest) -> dict[str, Any]:
    """What a test changes in the gateway (``parametrize("gw_options", [...], indirect=True)``):
    ``overrides`` (command-line prices), ``timeout`` (seconds), ``rate`` (the per-customer
    write limit, e.g. ``"2/minute"``)."""
    return dict(getattr(request, "param", {}))


@pytest.fixture
def gw(db_url: str, tmp_path: Path, gw_options: dict[str, Any]) -> Iterator[Served]:
    catalog = tmp_path / "tollkeep.toml"
    catalog.write_text(CATALOG)
    tk = Tollkeep(make_settings(db_url, catalog_path=str(catalog)))
    calls = tmp_path / "upstream-calls.txt"
    opts = gw_options
    env = {**os.environ, "UPSTREAM_CALLS": str(calls)}
    upstream = Upstream(UpstreamSpec(command=[sys.executable, str(UPSTREAM)], env=env))
    limit = Limiter.parse(opts["rate"], what="charged calls").hit if "rate" in opts else None
    gateway = McpGateway(
        tk,
        upstream,
        overrides=opts.get("overrides") or Overrides(),
        timeout_seconds=opts.get("timeout"),
        charger=Charger(tk, limit_writes=limit),
    )
    try:
        cid = tk.customers.create("agent-1", plan="basic")["id"]
        tk.ledger.grant(cid, 100, idempotency_key="grant-agent-1")
        key = tk.keys.create(cid)["key"]
        with serve(gateway) as url:
            yield Served(url, tk, gateway, calls, cid, key)
        report = tk.verify()
        assert report.ok, report.problems
    finally:
        tk.close()
