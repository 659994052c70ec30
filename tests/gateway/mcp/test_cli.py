"""``tollkeep gateway mcp`` as a user runs it: a real process on a migrated database, in front
of a stdio command or a streamable-HTTP upstream, called by the official SDK's client over
streamable HTTP, or spoken to over stdio (``--stdio --key``)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from typer.testing import CliRunner

from tests.factories import SRC, free_port
from tollkeep.cli.main import app
from tollkeep.config import Settings
from tollkeep.gateway.cli import parse_prices
from tollkeep.runtime import Tollkeep

from .conftest import UPSTREAM


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def env_for(workdir: Path) -> dict[str, str]:
    env = {**os.environ, "TOLLKEEP_DATABASE_URL": f"sqlite:///{workdir / 'tollkeep.db'}"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SRC), env.get("PYTHONPATH")) if p)
    env["UPSTREAM_CALLS"] = str(workdir / "calls.txt")
    env.pop("TOLLKEEP_CATALOG_PATH", None)
    return env


def agent(workdir: Path, credits: int) -> tuple[str, str]:
    """(customer id, API key) on the workdir's migrated database."""
    with Tollkeep(Settings(database_url=f"sqlite:///{workdir / 'tollkeep.db'}")) as tk:
        cid = str(tk.customers.create("agent")["id"])
        tk.ledger.grant(cid, credits, idempotency_key="grant")
        return cid, str(tk.keys.create(cid)["key"])


def available(workdir: Path, cid: str) -> int:
    with Tollkeep(Settings(database_url=f"sqlite:///{workdir / 'tollkeep.db'}")) as tk:
        assert tk.verify().ok
        return int(tk.balance(cid)["available"])


@contextmanager
def gateway(workdir: Path, *args: str) -> Iterator[tuple[str, str]]:
    """``tollkeep gateway mcp ARGS`` running; yields (its /mcp URL, what it printed)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", "gateway", "mcp", "--port", str(port), *args],
        cwd=workdir,
        env=env_for(workdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        assert proc.stdout is not None
        printed = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            printed.append(line)
            if line.startswith("  curl"):
                break
        text = "".join(printed)
        assert f"tollkeep MCP gateway on {url}" in text, text
        yield url, text
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


async def call(url: str, key: str, tool: str, args: dict[str, Any]) -> object:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60) as http,
        Client(streamable_http_client(url, http_client=http), cache=None) as c,
    ):
        r = await c.call_tool(tool, args)
        assert not r.is_error
        return r.structured_content


def test_one_command_wraps_a_stdio_server_and_charges_its_calls(workdir: Path) -> None:
    CliRunner().invoke(app, ["migrate"], catch_exceptions=False)
    cid, key = agent(workdir, 20)
    with gateway(
        workdir, "--price", "search=4", "--default-price", "1", "--", sys.executable, str(UPSTREAM)
    ) as (
        url,
        printed,
    ):
        assert "search" in printed and "4 credits per call" in printed and "Authorization: Bearer" in printed
        anyio.run(call, url, key, "search", {"query": "q", "n": 1})
        anyio.run(call, url, key, "echo", {"text": "x"})
    assert available(workdir, cid) == 15


def test_the_gateway_wraps_a_streamable_http_upstream(workdir: Path) -> None:
    CliRunner().invoke(app, ["migrate"], catch_exceptions=False)
    cid, key = agent(workdir, 20)
    port = free_port()
    upstream = subprocess.Popen(
        [sys.executable, str(UPSTREAM), "http", str(port)],
        env=env_for(workdir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{port}/mcp", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        with gateway(workdir, "--upstream", f"http://127.0.0.1:{port}/mcp", "--price", "search=3") as (
            url,
            _,
        ):
            anyio.run(call, url, key, "search", {"query": "q", "n": 1})
    finally:
        upstream.terminate()
        upstream.wait(timeout=15)
    assert available(workdir, cid) == 17


def test_stdio_mode_serves_one_local_agent(workdir: Path) -> None:
    CliRunner().invoke(app, ["migrate"], catch_exceptions=False)
    cid, key = agent(workdir, 20)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            *("-m", "tollkeep", "gateway", "mcp", "--stdio", "--key", key, "--price", "search=2"),
            *("--", sys.executable, str(UPSTREAM)),
        ],
        env=env_for(workdir),
        cwd=str(workdir),
    )

    async def main() -> None:
        async with Client(params, cache=None) as c:
            assert not (await c.call_tool("search", {"query": "q"})).is_error
            with pytest.raises(MCPError) as exc:
                await c.call_tool("unlisted", {})  # the default catalog prices nothing
            assert isinstance(exc.value.error.data, dict) and exc.value.error.data["code"] == "unpriced_tool"

    anyio.run(main)
    assert available(workdir, cid) == 18


def test_the_gateway_needs_a_migrated_database_and_an_upstream(workdir: Path) -> None:
    res = CliRunner().invoke(app, ["gateway", "mcp", "--", sys.executable, str(UPSTREAM)])
    assert res.exit_code == 2 and "tollkeep init" in res.output, res.output
    res = CliRunner().invoke(app, ["gateway", "mcp"])
    assert res.exit_code == 2 and "--upstream" in res.output
    res = CliRunner().invoke(app, ["gateway", "mcp", "--price", "search", "--", "x"])
    assert res.exit_code == 2 and "TOOL=CREDITS" in res.output


def test_parse_prices() -> None:
    assert parse_prices(["search=5", "srv/echo=0"]) == {"search": 5, "srv/echo": 0}
