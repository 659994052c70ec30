"""Billing inside an MCP server built on the official SDK (tollkeep.gateway.mcp_server): the
server itself runs under uvicorn, its tool bodies inside `billing.charge(...)`; the official
client calls it with an API key. Charged once on success, not on a tool error, refused with the
gateway's JSON-RPC errors; the ledger verified."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

from tests.conftest import make_settings
from tests.factories import free_port
from tollkeep.gateway.mcp import RPC_CODES
from tollkeep.gateway.mcp_server import McpBilling
from tollkeep.runtime import Tollkeep


@pytest.fixture
def billed(db_url: str, tmp_path: Path) -> Iterator[tuple[str, Tollkeep]]:
    tk = Tollkeep(make_settings(db_url))
    billing = McpBilling(tk, server="weather")
    server = MCPServer("weather")

    @server.tool()
    async def forecast(city: str, ctx: Context) -> dict[str, object]:
        async with billing.charge(ctx, price=2, tool="forecast"):
            return {"city": city, "high_c": 17}

    @server.tool()
    async def broken(ctx: Context) -> str:
        async with billing.charge(ctx, price=3, tool="broken"):
            raise ToolError("the tool failed")

    port = free_port()
    app = server.streamable_http_app(host="127.0.0.1")
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/mcp", tk
    finally:
        srv.should_exit = True
        thread.join(30)
        report = tk.verify()
        tk.close()
        assert report.ok, report.problems


def agent(tk: Tollkeep, credits: int) -> tuple[str, str]:
    cid = tk.customers.create(f"agent-{credits}")["id"]
    if credits:
        tk.ledger.grant(cid, credits, idempotency_key=f"g-{credits}")
    return cid, str(tk.keys.create(cid)["key"])


async def calls(url: str, key: str, *steps: tuple[str, dict[str, object]]) -> list[object]:
    out: list[object] = []
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as c,
    ):
        for name, args in steps:
            try:
                r = await c.call_tool(name, args)
                out.append("error" if r.is_error else r.structured_content)
            except MCPError as exc:
                out.append(exc.error)
    return out


def test_a_tool_is_charged_once_on_success_and_not_on_a_tool_error(billed: tuple[str, Tollkeep]) -> None:
    url, tk = billed
    cid, key = agent(tk, 10)
    got = anyio.run(calls, url, key, ("forecast", {"city": "Paris"}), ("broken", {}))
    assert got[0] == {"city": "Paris", "high_c": 17} and got[1] == "error"
    assert tk.balance(cid)["balance"] == 8


def test_refusals_are_the_gateways_jsonrpc_errors(billed: tuple[str, Tollkeep]) -> None:
    url, tk = billed
    cid, key = agent(tk, 1)
    (err,) = anyio.run(calls, url, key, ("forecast", {"city": "Oslo"}))
    assert err.code == RPC_CODES["insufficient_credits"]  # type: ignore[attr-defined]
    assert err.data["code"] == "insufficient_credits" and err.data["price"] == 2  # type: ignore[attr-defined]
    assert err.data["topup"]["url"].endswith("/v1/checkout")  # type: ignore[attr-defined]
    (bad,) = anyio.run(calls, url, "tk_live_not-a-key", ("forecast", {"city": "Oslo"}))
    assert bad.data["code"] == "invalid_api_key"  # type: ignore[attr-defined]
    assert tk.balance(cid)["balance"] == 1
