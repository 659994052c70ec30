"""The MCP gateway end to end: the official SDK's client (2026-07-28 and the legacy handshake)
→ the gateway (real uvicorn) → a real stdio upstream. Balances move by exactly the prices of
the delivered successful calls; the ledger is verified after each test (conftest)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tollkeep.gateway.mcp import IDEMPOTENCY_META, PRICE_META, RPC_CODES

from .conftest import Served

MODES = ["auto", "legacy"]


@asynccontextmanager
async def client(
    gw: Served, key: str | None = None, mode: str = "auto", header: str = "bearer"
) -> AsyncIterator[Client]:
    """The official SDK's client of the gateway, with an API key header."""
    key = key or gw.key
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    async with (
        httpx.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(gw.url, http_client=http), mode=mode, cache=None) as c,
    ):
        yield c


def run(fn: Any) -> Any:
    return anyio.run(fn)


@pytest.mark.parametrize("mode", MODES)
def test_paid_call_is_charged_once_free_call_never(gw: Served, mode: str) -> None:
    async def main() -> None:
        async with client(gw, mode=mode) as c:
            r = await c.call_tool("search", {"query": "q", "n": 2})
            assert not r.is_error and r.structured_content == {"results": ["q-0", "q-1"], "count": 2}
            r = await c.call_tool("echo", {"text": "hi"})
            assert not r.is_error

    run(main)
    assert gw.available() == 95
    assert gw.upstream_calls("search") == 1 and gw.upstream_calls("echo") == 1
