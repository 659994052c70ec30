"""Helpers the MCP gateway tests share: the SDK client of the gateway, running a coroutine,
the data of a JSON-RPC error."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from .conftest import Served


@asynccontextmanager
async def client(
    gw: Served, key: str | None = None, mode: str = "auto", header: str = "bearer"
) -> AsyncIterator[Client]:
    """The official SDK's client of the gateway, with an API key header."""
    key = key or gw.key
    headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=60) as http,
        Client(streamable_http_client(gw.url, http_client=http), mode=mode, cache=None) as c,
    ):
        yield c


def run(fn: Any) -> Any:
    return anyio.run(fn)


def rpc_error(exc: pytest.ExceptionInfo[MCPError]) -> dict[str, Any]:
    data = exc.value.error.data
    assert isinstance(data, dict)
    return data
