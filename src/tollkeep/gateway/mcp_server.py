"""Billing inside a Python MCP server built on the official SDK — no gateway hop.

The tool body runs inside :meth:`McpBilling.charge`: the caller's key is checked (the HTTP
request's ``Authorization: Bearer`` / ``X-API-Key``, or the one key given for a stdio server),
the key's limits admitted, the price held, and the hold settled when the body returns, released
when it raises (a tool error is not charged) or when the call is cancelled::

    from mcp.server.mcpserver import Context, MCPServer
    from tollkeep.gateway.mcp_server import McpBilling
    from tollkeep.runtime import Tollkeep

    server = MCPServer("weather")
    billing = McpBilling(Tollkeep())          # TOLLKEEP_* settings: the same database as `serve`

    @server.tool()
    async def forecast(city: str, ctx: Context) -> dict:
        async with billing.charge(ctx, price=2, tool="forecast"):
            return await compute(city)

Refusals are the same JSON-RPC errors as the gateway's (``error.data.code``:
``insufficient_credits`` with the balance, the price and the top-up link, ``invalid_api_key``,
``tool_not_allowed``, ``rate_limited``, ``key_spend_limit``…; numeric codes in
docs/gateway-mcp.md). A call that carries ``_meta["tollkeep/idempotency-key"]`` holds under that
key, so a retry is never charged twice (the body runs again: in-process there is no stored
result to replay — the gateway has one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.shared.exceptions import MCPError

from tollkeep.gateway.core import Charger, Hold, hold_key, payment_error_data
from tollkeep.gateway.mcp import IDEMPOTENCY_META, RPC_CODES, rpc_error
from tollkeep.keys import Principal
from tollkeep.kit.errors import InsufficientCredits, TollkeepError
from tollkeep.kit.ids import new_id
from tollkeep.runtime import Tollkeep

__all__ = ["McpBilling"]


class McpBilling:
    """``key``: the API key of every call (a stdio server serves one agent); None: each HTTP
    request's own key."""

    def __init__(self, tk: Tollkeep, *, key: str | None = None, server: str = "server") -> None:
        self.tk = tk
        self.key = key
        self.server = server
        self.charger = Charger(tk, limit_writes=tk.limits.writes.hit)

    async def _caller(self, ctx: Any) -> Principal:
        if self.key is not None:
            return await self.charger.authenticate_key(self.key)
        headers: Mapping[str, str] = getattr(ctx, "headers", None) or {}
        return await self.charger.authenticate({k.lower(): v for k, v in headers.items()})

    @staticmethod
    def _idempotency_key(ctx: Any) -> str | None:
        meta = getattr(getattr(ctx, "request_context", None), "meta", None)
        value = meta.get(IDEMPOTENCY_META) if isinstance(meta, Mapping) else None
        if value is None and meta is not None:
            value = getattr(meta, "model_extra", {}).get(IDEMPOTENCY_META)
        return value if isinstance(value, str) and 0 < len(value) <= 255 else None

    @asynccontextmanager
    async def charge(self, ctx: Any, *, price: int, tool: str) -> AsyncIterator[Hold | None]:
        """Charge ``price`` ledger units for this call of ``tool`` if the block succeeds."""
        if price < 0:
            raise ValueError("price must not be negative")
        target = f"{self.server}/{tool}"
        try:
            caller = await self._caller(ctx)
            permit = await self.charger.admit(caller, target=target, price=price)
        except TollkeepError as exc:
            raise rpc_error(exc) from None
        try:
            hold: Hold | None = None
            if price > 0:
                idem = self._idempotency_key(ctx)
                key = hold_key("mcp-inproc", f"{caller.customer_id}:{target}:{idem or new_id('call')}")
                try:
                    hold = await self.charger.hold(
                        caller, price, idempotency_key=key, properties={"tool": target}
                    )
                except InsufficientCredits as exc:
                    data = payment_error_data(self.tk, exc, price)
                    raise MCPError(
                        code=RPC_CODES["insufficient_credits"], message=exc.message, data=data
                    ) from None
                except TollkeepError as exc:
                    raise rpc_error(exc) from None
            try:
                yield hold
            except BaseException:
                if hold is not None:
                    with anyio.CancelScope(shield=True):
                        await self.charger.release(hold)
                raise
            if hold is not None:
                await self.charger.settle(hold)
        finally:
            with anyio.CancelScope(shield=True):
                await self.charger.finish(permit)
