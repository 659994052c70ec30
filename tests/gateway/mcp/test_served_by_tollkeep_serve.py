"""Upstreams declared in the catalog (`[gateway.upstreams.<name>]`) are gatewayed by
`tollkeep serve` itself at /mcp/<name>: the real server process, the SDK's upstream over stdio
and over streamable HTTP, the official client as the agent; charged once, the ledger verified."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from tests.conftest import bearer
from tests.factories import admin_http, free_port, new_customer, served
from tollkeep.catalog import CatalogError, load_catalog

UPSTREAM = Path(__file__).resolve().parent / "upstream_server.py"


def catalog(tmp: Path, http_url: str) -> Path:
    path = tmp / "tollkeep.toml"
    path.write_text(
        f"""
version = "serve-gw"
[meters.api_call]
aggregation = "count"
[meters.api_call.price]
model = "flat"
amount = 1

[gateway.upstreams.local]
command = [{sys.executable!r}, {str(UPSTREAM)!r}]

[gateway.upstreams.remote]
url = "{http_url}"

[tools."local/search"]
price = 5
[tools."remote/search"]
price = 3
"""
    )
    return path


async def call(url: str, key: str) -> dict:
    async with (
        httpx2.AsyncClient(headers=bearer(key), timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as c,
    ):
        tools = {t.name: t for t in (await c.list_tools()).tools}
        r = await c.call_tool("search", {"query": "q", "n": 1})
        assert not r.is_error
        return {"tools": sorted(tools), "meta": (r.meta or {}).get("tollkeep/charge")}


def test_serve_gateways_the_catalogs_upstreams(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    remote = subprocess.Popen([sys.executable, str(UPSTREAM), "http", str(port)], stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        cat = catalog(tmp_path, f"http://127.0.0.1:{port}/mcp")
        with served(db_url, tmp_path, catalog=cat) as base, admin_http(base) as admin:
            cid, key = new_customer(admin, "agent", 20)
            local = anyio.run(call, f"{base}/mcp/local", key)
            assert "search" in local["tools"] and local["meta"]["charged"] == 5
            remote_call = anyio.run(call, f"{base}/mcp/remote", key)
            assert remote_call["meta"] == {"charged": 3, "balance": 12}
            assert admin.get(f"/admin/customers/{cid}/balance").json()["balance"] == 12
    finally:
        remote.terminate()
        remote.wait(timeout=10)


@pytest.mark.parametrize(
    "table, message",
    [
        ('[gateway.upstreams.x]\ncommand = "python server.py"', "non-empty list of strings"),
        ('[gateway.upstreams.x]\nurl = "ftp://h"', "http:// or https://"),
        ('[gateway.upstreams.x]\ncommand = ["a"]\nurl = "http://h"', "give one of command"),
        ('[gateway.upstreams."a b"]\nurl = "http://h"', "upstream name"),
    ],
)
def test_bad_upstreams_are_refused_with_the_reason(tmp_path: Path, table: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(f'version = "x"\n{table}\n')
    with pytest.raises(CatalogError) as err:
        load_catalog(str(path))
    assert message in str(err.value)
