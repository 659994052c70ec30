"""The MCP gateway end to end: the official SDK's client (2026-07-28 and the legacy handshake)
→ the gateway (real uvicorn) → a real stdio upstream. Balances move by exactly the prices of
the delivered successful calls; the ledger is verified after each test (conftest)."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tollkeep.gateway.mcp import IDEMPOTENCY_META, PRICE_META, RPC_CODES, Overrides
from tollkeep.kit.actor import SYSTEM

from .conftest import Served
from .helpers import client, rpc_error, run

MODES = ["auto", "legacy"]


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


@pytest.mark.parametrize("mode", MODES)
def test_tool_errors_and_jsonrpc_errors_are_not_charged(gw: Served, mode: str) -> None:
    async def main() -> None:
        async with client(gw, mode=mode) as c:
            r = await c.call_tool("broken", {})
            assert r.is_error
            with pytest.raises(MCPError) as exc:
                await c.call_tool("rpc_error", {})
            assert exc.value.code == -32050  # the upstream's own error, passed through

    run(main)
    assert gw.available() == 100
    assert gw.upstream_calls("broken") == 1 and gw.upstream_calls("rpc_error") == 1


@pytest.mark.parametrize("gw_options", [{"timeout": 1}], indirect=True)
def test_upstream_timeout_releases_the_hold(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            with pytest.raises(MCPError) as exc:
                await c.call_tool("slow", {"seconds": 30})
            assert exc.value.code == RPC_CODES["upstream_timeout"]
            assert rpc_error(exc)["code"] == "upstream_timeout"

    run(main)
    assert gw.available() == 100


async def _wait_for(predicate: Any) -> None:
    with anyio.fail_after(30):
        while not predicate():
            await anyio.sleep(0.02)


@pytest.mark.parametrize("mode", MODES)
def test_a_cancelled_call_is_not_charged(gw: Served, mode: str) -> None:
    async def main() -> None:
        async with client(gw, mode=mode) as c:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await c.call_tool("slow", {"seconds": 30})

                tg.start_soon(call)
                await _wait_for(lambda: gw.upstream_calls("slow") == 1)  # it reached the upstream
                assert gw.available() == 98  # held
                tg.cancel_scope.cancel()
            await _wait_for(lambda: gw.available() == 100)  # released, not charged

    run(main)


def test_a_client_that_disconnects_mid_call_is_not_charged(gw: Served) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "slow",
            "arguments": {"seconds": 30},
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "1"},
            },
        },
    }
    headers = {
        "Authorization": f"Bearer {gw.key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "slow",
    }

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as http, anyio.create_task_group() as tg:

            async def call() -> None:
                async with http.stream("POST", gw.url, json=body, headers=headers) as resp:
                    await resp.aread()

            tg.start_soon(call)
            await _wait_for(lambda: gw.upstream_calls("slow") == 1)
            assert gw.available() == 98
            tg.cancel_scope.cancel()  # drops the connection
        await _wait_for(lambda: gw.available() == 100)

    run(main)


@pytest.mark.parametrize("mode", MODES)
def test_a_retry_with_the_same_idempotency_key_replays_without_calling_upstream(
    gw: Served, mode: str
) -> None:
    async def main() -> None:
        async with client(gw, mode=mode) as c:
            meta: Any = {IDEMPOTENCY_META: "run-1/step-1"}
            first = await c.call_tool("search", {"query": "q", "n": 1}, meta=meta)
            again = await c.call_tool("search", {"query": "q", "n": 1}, meta=meta)
            assert again.structured_content == first.structured_content
            assert again.meta and again.meta["tollkeep/charge"]["replayed"] is True
            with pytest.raises(MCPError) as exc:
                await c.call_tool("search", {"query": "other", "n": 1}, meta=meta)
            assert exc.value.code == RPC_CODES["idempotency_conflict"]
            assert rpc_error(exc)["code"] == "idempotency_conflict"
            free: Any = {IDEMPOTENCY_META: "free-1"}
            await c.call_tool("echo", {"text": "x"}, meta=free)
            await c.call_tool("echo", {"text": "x"}, meta=free)

    run(main)
    assert gw.available() == 95
    assert gw.upstream_calls("search") == 1 and gw.upstream_calls("echo") == 1


def test_a_failed_call_retried_with_its_key_runs_again(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            meta: Any = {IDEMPOTENCY_META: "r" * 255}  # the longest key: its hold's key is hashed
            assert (await c.call_tool("broken", {}, meta=meta)).is_error
            assert (await c.call_tool("broken", {}, meta=meta)).is_error

    run(main)
    assert gw.available() == 100 and gw.upstream_calls("broken") == 2


def test_out_of_credits_is_an_error_an_agent_can_act_on(gw: Served) -> None:
    _, key = gw.customer("poor", 3, plan="basic")

    async def main() -> None:
        async with client(gw, key=key) as c:
            with pytest.raises(MCPError) as exc:
                await c.call_tool("search", {"query": "q"})
            assert exc.value.code == RPC_CODES["insufficient_credits"]
            data = rpc_error(exc)
            assert data["code"] == "insufficient_credits"
            assert data["balance"] == 3 and data["price"] == 5
            assert data["topup"]["url"].endswith("/v1/checkout")

    run(main)
    assert gw.upstream_calls("search") == 0


@pytest.mark.parametrize("mode", MODES)
def test_tools_are_listed_with_prices_and_filtered_by_entitlement(gw: Served, mode: str) -> None:
    _, pro_key = gw.customer("pro-agent", 10, plan="pro")

    async def main() -> None:
        async with client(gw, mode=mode) as c:
            listed = await c.list_tools()
            tools = {t.name: t for t in listed.tools}
            assert "premium" not in tools and "unlisted" not in tools  # not entitled, unpriced
            assert tools["search"].meta and tools["search"].meta[PRICE_META] == {
                "credits": 5,
                "unit": "credit",
            }
            assert tools["search"].description and tools["search"].description.endswith(
                "[5 credits per call]"
            )
            assert tools["echo"].meta and tools["echo"].meta[PRICE_META]["free"] is True
            if mode == "auto":
                assert listed.cache_scope == "private"
            with pytest.raises(MCPError) as exc:
                await c.call_tool("premium", {})
            assert exc.value.code == RPC_CODES["not_entitled"]
            assert rpc_error(exc)["code"] == "not_entitled"
            with pytest.raises(MCPError) as exc:
                await c.call_tool("unlisted", {})
            assert rpc_error(exc)["code"] == "unpriced_tool"
        async with client(gw, key=pro_key, mode=mode) as c:
            assert "premium" in {t.name for t in (await c.list_tools()).tools}
            assert not (await c.call_tool("premium", {})).is_error

    run(main)
    assert gw.upstream_calls("premium") == 1 and gw.upstream_calls("unlisted") == 0
    assert gw.available() == 100


@pytest.mark.parametrize("header", ["bearer", "x-api-key"])
def test_keys_are_checked(gw: Served, header: str) -> None:
    async def main() -> None:
        async with client(gw, key="tk_live_" + "x" * 40, header=header) as c:
            with pytest.raises(MCPError) as exc:
                await c.list_tools()
            assert exc.value.code == RPC_CODES["invalid_api_key"]
            assert rpc_error(exc)["code"] == "invalid_api_key"
        async with client(gw, header=header) as c:
            assert (await c.call_tool("search", {"query": "q"})).structured_content

    run(main)
    assert gw.available() == 95


@pytest.mark.parametrize(
    "gw_options",
    [{"overrides": Overrides(prices={"echo": 2, "upstream/search": 1}, default_price=7)}],
    indirect=True,
)
def test_command_line_prices_override_the_catalog(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            await c.call_tool("echo", {"text": "x"})  # 2 (free in the catalog)
            await c.call_tool("search", {"query": "q"})  # 1 (5 in the catalog)
            await c.call_tool("unlisted", {})  # 7: the default price

    run(main)
    assert gw.available() == 90


@pytest.mark.parametrize("gw_options", [{"rate": "2/minute"}], indirect=True)
def test_rate_limited_calls_get_a_json_rpc_error(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            await c.call_tool("search", {"query": "q"})
            await c.call_tool("search", {"query": "q"})
            with pytest.raises(MCPError) as exc:
                await c.call_tool("search", {"query": "q"})
            assert exc.value.code == RPC_CODES["rate_limited"]
            data = rpc_error(exc)
            assert data["code"] == "rate_limited" and data["retry_after"] >= 1

    run(main)
    assert gw.available() == 90 and gw.upstream_calls("search") == 2


def test_resources_and_prompts_pass_through(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            resources = await c.list_resources()
            assert [str(r.uri) for r in resources.resources] == ["notes://readme"]
            read = await c.read_resource("notes://readme")
            assert read.contents[0].text == "read me"  # type: ignore[union-attr]
            prompt = await c.get_prompt("greet", {"name": "Ada"})
            assert "Hello Ada" in str(prompt.messages[0].content)

    run(main)
    assert gw.available() == 100


def test_concurrent_calls_never_overdraw(gw: Served) -> None:
    cid, key = gw.customer("small", 12, plan="basic")
    outcomes: list[str] = []

    async def main() -> None:
        async with client(gw, key=key) as c:

            async def call() -> None:
                try:
                    await c.call_tool("search", {"query": "q"})
                    outcomes.append("ok")
                except MCPError as exc:
                    outcomes.append(str((exc.error.data or {}).get("code")))

            async with anyio.create_task_group() as tg:
                for _ in range(20):
                    tg.start_soon(call)

    run(main)
    ok = outcomes.count("ok")
    assert ok == 2 and outcomes.count("insufficient_credits") == 18
    assert gw.available(cid) + 5 * ok == 12  # conservation: granted == left + spent
    assert gw.upstream_calls("search") == ok


def test_metered_tools_are_rated_by_an_argument_or_by_the_result(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            listed = {t.name: t for t in (await c.list_tools()).tools}
            assert listed["fetch"].meta and listed["fetch"].meta[PRICE_META]["meter"] == "results"
            r = await c.call_tool("fetch", {"n": 3})  # 3 results, 2 credits each
            assert r.meta and r.meta["tollkeep/charge"]["charged"] == 6
            r = await c.call_tool("scan", {"found": 2})  # 10 held, 2 results settled
            assert r.meta and r.meta["tollkeep/charge"]["charged"] == 4

    run(main)
    assert gw.available() == 90


def test_an_upstream_that_dies_mid_call_charges_nothing(gw: Served) -> None:
    async def main() -> None:
        async with client(gw) as c:
            with pytest.raises(MCPError) as exc:
                await c.call_tool("crash", {})
            assert rpc_error(exc)["code"] == "upstream_unavailable"

    run(main)
    assert gw.available() == 100 and gw.upstream_calls("crash") == 1


def test_a_server_key_is_not_an_agent_key(gw: Served) -> None:
    raw = gw.tk.operators.create_server_key("backend", None, actor=SYSTEM)["key"]

    async def main() -> None:
        async with client(gw, key=raw) as c:
            with pytest.raises(MCPError) as exc:
                await c.list_tools()
            assert rpc_error(exc)["code"] == "invalid_api_key"

    run(main)


def _modern(method: str, params: dict[str, Any], rid: int = 1) -> dict[str, Any]:
    envelope = {
        "io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {},
    }
    return {"jsonrpc": "2.0", "id": rid, "method": method, "params": {**params, "_meta": envelope}}


def test_bad_input_gets_a_clear_error_and_no_charge(gw: Served) -> None:
    headers = {
        "Authorization": f"Bearer {gw.key}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2026-07-28",
    }
    with httpx.Client(timeout=60) as http:

        def post(body: Any, **extra: str) -> httpx.Response:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            return http.post(gw.url, content=content, headers={**headers, **extra})

        r = post(b'{"jsonrpc": "2.0", "id": 1, "method": ')  # malformed JSON
        assert r.status_code < 500 and r.json()["error"]["code"] == -32700
        call = _modern("tools/call", {"name": "search", "arguments": {"query": "q"}})
        r = post([call, call], **{"Mcp-Method": "tools/call", "Mcp-Name": "search"})  # a batch
        assert r.status_code < 500 and "error" in r.json()
        r = post(_modern("no/such", {}), **{"Mcp-Method": "no/such"})
        assert r.status_code < 500 and r.json()["error"]["code"] == -32601
        big = _modern("tools/call", {"name": "search", "arguments": {"query": "q" * 5_000_000}})
        r = post(big, **{"Mcp-Method": "tools/call", "Mcp-Name": "search"})  # oversized
        assert 400 <= r.status_code < 500
        bad = _modern("tools/call", {"name": "search", "arguments": {"query": 7, "n": "many"}})
        r = post(bad, **{"Mcp-Method": "tools/call", "Mcp-Name": "search"})  # invalid arguments
        assert r.status_code < 500
        body = r.json()
        assert "error" in body or body["result"]["isError"] is True
    assert gw.available() == 100


def test_concurrent_retries_with_one_key_run_and_charge_once(gw: Served) -> None:
    outcomes: list[str] = []

    async def main() -> None:
        async with client(gw) as c:

            async def call() -> None:
                meta: Any = {IDEMPOTENCY_META: "same-key"}
                try:
                    r = await c.call_tool("search", {"query": "q"}, meta=meta)
                    replayed = bool(r.meta and r.meta["tollkeep/charge"].get("replayed"))
                    outcomes.append("replayed" if replayed else "ran")
                except MCPError as exc:
                    outcomes.append(str((exc.error.data or {}).get("code")))

            async with anyio.create_task_group() as tg:
                for _ in range(8):
                    tg.start_soon(call)

    run(main)
    assert outcomes.count("ran") == 1, outcomes
    assert set(outcomes) <= {"ran", "replayed", "call_in_progress"}, outcomes
    assert gw.upstream_calls("search") == 1 and gw.available() == 95
