"""A key minted for one agent run, through the MCP gateway: its tool allowlist, its spend
limit (enforced in the hold's transaction, also with parallel calls), its rate limit and its
cap on calls in flight — each refused as a JSON-RPC error an agent can act on, nothing
charged, the upstream not called."""

from __future__ import annotations

import anyio
import pytest
from mcp.shared.exceptions import MCPError

from tollkeep.gateway.mcp import RPC_CODES

from .conftest import Served
from .helpers import client, rpc_error, run


def agent_key(gw: Served, **limits: object) -> str:
    return str(gw.tk.keys.create(gw.customer_id, force_new=True, limits=dict(limits))["key"])


def test_a_tool_outside_the_keys_allowlist_is_refused(gw: Served) -> None:
    key = agent_key(gw, tools=["upstream/echo"])

    async def main() -> None:
        async with client(gw, key=key) as c:
            assert not (await c.call_tool("echo", {"text": "hi"})).is_error
            with pytest.raises(MCPError) as exc:
                await c.call_tool("search", {"query": "q"})
            assert exc.value.code == RPC_CODES["not_entitled"]
            assert rpc_error(exc)["code"] == "tool_not_allowed"

    run(main)
    assert gw.upstream_calls("search") == 0 and gw.available() == 100


def test_parallel_calls_never_spend_past_the_keys_limit(gw: Served) -> None:
    key = agent_key(gw, spend_limit=12)  # search costs 5: two calls fit, a third does not
    outcomes: list[str] = []

    async def one(c: object) -> None:
        try:
            r = await c.call_tool("search", {"query": "q"})  # type: ignore[attr-defined]
            outcomes.append("error" if r.is_error else "ok")
        except MCPError as exc:
            outcomes.append(str((exc.error.data or {}).get("code")))

    async def main() -> None:
        async with client(gw, key=key) as c, anyio.create_task_group() as tg:
            for _ in range(8):
                tg.start_soon(one, c)

    run(main)
    assert outcomes.count("ok") == 2, outcomes
    assert set(outcomes) == {"ok", "key_spend_limit"}, outcomes
    # the customer's wallet paid exactly the two calls; the upstream ran twice
    assert gw.available() == 90 and gw.upstream_calls("search") == 2


def test_the_keys_rate_limit_answers_rate_limited(gw: Served) -> None:
    key = agent_key(gw, rate_limit="2/minute")

    async def main() -> None:
        async with client(gw, key=key) as c:
            for _ in range(2):
                assert not (await c.call_tool("search", {"query": "q"})).is_error
            with pytest.raises(MCPError) as exc:
                await c.call_tool("search", {"query": "q"})
            assert exc.value.code == RPC_CODES["rate_limited"]
            data = rpc_error(exc)
            assert data["code"] == "rate_limited" and data["retry_after"] >= 1

    run(main)
    assert gw.available() == 90 and gw.upstream_calls("search") == 2


def test_the_keys_cap_on_calls_in_flight(gw: Served) -> None:
    key = agent_key(gw, max_concurrency=1)
    codes: list[str] = []

    async def slow(c: object) -> None:
        try:
            await c.call_tool("slow", {"seconds": 1.0})  # type: ignore[attr-defined]
            codes.append("ok")
        except MCPError as exc:
            codes.append(str((exc.error.data or {}).get("code")))

    async def main() -> None:
        async with client(gw, key=key) as c:
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow, c)
                await anyio.sleep(0.3)
                tg.start_soon(slow, c)
            # the slot came back when the first call ended
            await slow(c)

    run(main)
    assert codes == ["concurrency_limited", "ok", "ok"] or codes == ["ok", "concurrency_limited", "ok"], codes
    assert gw.available() == 96
