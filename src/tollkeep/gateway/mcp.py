"""The MCP gateway: an MCP server (the official SDK's, so every revision it serves is served:
2026-07-28 stateless requests with ``server/discover`` and the ``Mcp-Method`` / ``Mcp-Name``
headers, and the earlier initialize handshake with ``Mcp-Session-Id``) whose tools, resources
and prompts are the upstream's, and whose ``tools/call`` is charged:

    authenticate → price → entitlement → admit (limits) → [replay?] → hold → upstream → settle

* ``tools/list``: the upstream's tools the caller's plan is entitled to, each with its price in
  ``_meta["tollkeep/price"]`` and a short suffix of its description; ``cacheScope: private``.
* ``tools/call``: settled when the upstream's result is a success (``isError: true`` too when
  the tool's ``charge_errors``); released on a JSON-RPC error, an ``isError`` result, an
  upstream timeout, and when the client cancels or goes away while the call runs.
* ``params._meta["tollkeep/idempotency-key"]``: a retry replays the stored result (no upstream
  call, no second charge); the same key with other arguments is ``idempotency_conflict``.
* resources and prompts pass through, uncharged.

Refusals are JSON-RPC errors with a stable ``error.data.code`` (:data:`RPC_CODES`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.server.context import ServerRequestContext
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool

from tollkeep.catalog import ToolPrice, ToolsPolicy
from tollkeep.gateway.calls import CallKey, Calls
from tollkeep.gateway.core import Charger, Hold, hold_key, payment_error_data
from tollkeep.gateway.upstream import Upstream
from tollkeep.keys import Principal
from tollkeep.kit.errors import AuthError, InsufficientCredits, TollkeepError
from tollkeep.kit.ids import new_id
from tollkeep.runtime import Tollkeep

__all__ = ["IDEMPOTENCY_META", "PRICE_META", "RPC_CODES", "McpGateway", "Overrides"]

log = logging.getLogger("tollkeep.gateway")

IDEMPOTENCY_META = "tollkeep/idempotency-key"
PRICE_META = "tollkeep/price"
CHARGE_META = "tollkeep/charge"

# The JSON-RPC error codes of the gateway's refusals (server-error range; -32000..-32022 and
# -32042 are taken by the MCP SDK and spec). ``error.data.code`` is the stable string.
RPC_CODES: Mapping[str, int] = {
    "invalid_api_key": -32060,  # and every 401: missing_api_key, key_revoked, key_expired, …
    "insufficient_credits": -32061,
    "not_entitled": -32062,  # and every 403: insufficient_scope, customer_inactive, …
    "rate_limited": -32063,  # and cap_exceeded
    "unpriced_tool": -32064,
    "idempotency_conflict": -32065,  # and call_in_progress
    "upstream_timeout": -32066,
    "upstream_unavailable": -32067,
    "invalid_request": -32068,
}
_MAX_KEY = 255
_RESERVED_META = ("io.modelcontextprotocol/", "progressToken")


@dataclass(frozen=True)
class Overrides:
    """Prices given on the command line: ``prices`` by tool name (``tool`` or
    ``server/tool``) in ledger units; ``default_price`` for every other tool."""

    prices: Mapping[str, int] = field(default_factory=dict)
    default_price: int | None = None


def rpc_error(exc: TollkeepError, **data: Any) -> MCPError:
    """A TollkeepError as the JSON-RPC error an agent can act on."""
    if isinstance(exc, AuthError):
        rpc = RPC_CODES["invalid_api_key"]
    elif exc.status == 403:
        rpc = RPC_CODES["not_entitled"]
    elif exc.status == 429:
        rpc = RPC_CODES["rate_limited"]
    elif exc.code in ("idempotency_conflict", "call_in_progress"):
        rpc = RPC_CODES["idempotency_conflict"]
    else:
        rpc = RPC_CODES.get(exc.code, RPC_CODES["invalid_request"])
    body = {"code": exc.code, "message": exc.message, **exc.details, **data}
    return MCPError(code=rpc, message=exc.message, data=body)


class McpGateway:
    """One upstream behind one runtime. ``key``: the API key of every request (stdio mode,
    where no request carries headers); ``charger``: the charging seam (default: one on ``tk``
    counting charged calls against ``limit_writes``)."""

    def __init__(
        self,
        tk: Tollkeep,
        upstream: Upstream,
        *,
        overrides: Overrides | None = None,
        charger: Charger | None = None,
        key: str | None = None,
        timeout_seconds: float | None = None,
    ) -> None:
        self.tk = tk
        self.upstream = upstream
        self.overrides = overrides or Overrides()
        self.charger = charger or Charger(tk)
        self.calls = Calls(tk.db, tk.clock)
        self.key = key
        self._timeout = timeout_seconds
        # the upstream tools' input schemas, as last listed: the SDK checks a 2026-07-28 call's
        # Mcp-Param-* headers against them (without it, it would list the tools on every call)
        self._schemas: dict[str, Mapping[str, Any]] = {}
        self.server: Server[Any] = Server(
            "tollkeep-gateway",
            version="1",
            instructions="Tools are charged per call in credits: see each tool's _meta['tollkeep/price'].",
            on_list_tools=self.list_tools,
            get_tool_input_schema=self._schemas.get,
        )
        # handlers answering the upstream's JSON as it came (dicts), not re-built models
        add = self.server.add_request_handler
        add("tools/call", types.CallToolRequestParams, self.call_tool)
        add("resources/list", types.PaginatedRequestParams, self.list_resources)
        add("resources/templates/list", types.PaginatedRequestParams, self.list_resource_templates)
        add("resources/read", types.ReadResourceRequestParams, self.read_resource)
        add("prompts/list", types.PaginatedRequestParams, self.list_prompts)
        add("prompts/get", types.GetPromptRequestParams, self.get_prompt)

    # ---- pricing ----------------------------------------------------------------------------
    @property
    def policy(self) -> ToolsPolicy:
        return self.tk.catalog.tools

    @property
    def timeout(self) -> float:
        return float(self._timeout if self._timeout is not None else self.policy.timeout_seconds)

    def price_of(self, tool: str) -> ToolPrice | None:
        """The price of an upstream tool: the command line's, else the catalog's, else the
        command line's default; None: unpriced and refused."""
        server = self.upstream.name
        o = self.overrides
        flat = o.prices.get(f"{server}/{tool}", o.prices.get(tool))
        if flat is not None:
            return ToolPrice(key=f"{server}/{tool}", price=flat, free=flat == 0)
        own = self.policy.prices.get(f"{server}/{tool}") or self.policy.prices.get(f"{server}/*")
        if own is not None:
            return own
        if o.default_price is not None:
            return ToolPrice(key=f"{server}/{tool}", price=o.default_price, free=o.default_price == 0)
        return self.policy.price_of(server, tool)

    def shown_price(self, price: ToolPrice) -> dict[str, Any]:
        """The price as ``_meta["tollkeep/price"]`` shows it."""
        unit = self.tk.catalog.credits.name
        if price.free:
            return {"credits": 0, "unit": unit, "free": True}
        if price.meter is not None:
            meter = self.tk.catalog.meters.get(price.meter)
            shown: dict[str, Any] = {"meter": price.meter, "quantity": price.quantity, "unit": unit}
            if meter is not None and meter.price is not None:
                shown["price"] = meter.price.to_public_dict()
            if price.hold is not None:
                shown["hold"] = price.hold
            return shown
        return {"credits": price.price, "unit": unit}

    def suffix(self, price: ToolPrice) -> str:
        template = self.policy.description_suffix
        if not template:
            return ""
        unit = self.tk.catalog.credits.name
        if price.free:
            text = "free"
        elif price.meter is not None:
            text = f"priced per {price.meter}"
        else:
            text = f"{price.price} {unit}{'' if price.price == 1 else 's'} per call"
        return template.replace("{price}", text)

    async def refresh_tools(self) -> list[types.Tool]:
        """List the upstream's tools (every page) and remember their input schemas."""
        tools = await self._upstream(self.upstream.all_tools())
        self._schemas.update({t.name: t.input_schema for t in tools})
        return list(tools)

    # ---- who is calling ---------------------------------------------------------------------
    async def caller(self, ctx: ServerRequestContext[Any, Any]) -> Principal:
        try:
            request = ctx.request
            headers = getattr(request, "headers", None)
            if headers is not None:
                client = getattr(request, "client", None)
                return await self.charger.authenticate(headers, client.host if client else None)
            if self.key is None:
                raise AuthError("this gateway has no API key to call with (--key)", code="missing_api_key")
            return await self.charger.authenticate_key(self.key)
        except TollkeepError as exc:
            raise rpc_error(exc) from None

    async def entitled(self, caller: Principal) -> frozenset[str]:
        """The features of the caller's plan."""
        plan_key = await self.charger.plan_of(caller.customer_id)
        plan = self.tk.catalog.plan(plan_key) if plan_key else None
        return frozenset(plan.features) if plan is not None else frozenset()

    # ---- tools ------------------------------------------------------------------------------
    async def list_tools(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        caller = await self.caller(ctx)
        features = await self.entitled(caller)
        page = await self._upstream(self.upstream.list_tools(params.cursor if params else None))
        tools = []
        for tool in page.tools:
            self._schemas[tool.name] = tool.input_schema
            price = self.price_of(tool.name)
            if price is None or (price.feature is not None and price.feature not in features):
                continue
            meta = {**(tool.meta or {}), PRICE_META: self.shown_price(price)}
            description = (tool.description or "") + self.suffix(price)
            tools.append(tool.model_copy(update={"meta": meta, "description": description}))
        return types.ListToolsResult(
            tools=tools, next_cursor=page.next_cursor, cache_scope="private", ttl_ms=0
        )

    async def call_tool(
        self, ctx: ServerRequestContext[Any, Any], params: types.CallToolRequestParams
    ) -> dict[str, Any]:
        caller = await self.caller(ctx)
        name = params.name
        arguments = params.arguments or {}
        price = self.price_of(name)
        if price is None:
            raise MCPError(
                code=RPC_CODES["unpriced_tool"],
                message=f"tool {name!r} has no price: the gateway refuses unpriced tools",
                data={"code": "unpriced_tool", "tool": name},
            )
        if price.feature is not None and price.feature not in await self.entitled(caller):
            raise MCPError(
                code=RPC_CODES["not_entitled"],
                message=f"tool {name!r} is not included in your plan",
                data={"code": "not_entitled", "tool": name, "feature": price.feature},
            )
        # the agent's own _meta goes on, minus its connection's reserved keys (the upstream
        # session stamps its own) and ours
        meta = {k: v for k, v in (params.meta or {}).items() if not k.startswith(_RESERVED_META)}
        idem = meta.pop(IDEMPOTENCY_META, None)
        if idem is not None and (not isinstance(idem, str) or not 0 < len(idem) <= _MAX_KEY):
            raise MCPError(
                code=RPC_CODES["invalid_request"],
                message=f"_meta[{IDEMPOTENCY_META!r}] must be a string of 1 to {_MAX_KEY} characters",
                data={"code": "invalid_idempotency_key"},
            )
        target = f"{self.upstream.name}/{name}"
        amount, quantity = self._hold_size(price, arguments)
        permit = None
        try:
            try:
                permit = await self.charger.admit(
                    caller, target=target, price=0 if price.free else max(amount, 1)
                )
                call: CallKey | None = None
                if idem is not None:
                    call, stored = await run_in_threadpool(
                        self.calls.lookup, caller.customer_id, idem, target, arguments
                    )
                    if stored is not None:
                        return _replayed(stored)
            except TollkeepError as exc:
                raise rpc_error(exc) from None
            forward_meta: types.RequestParamsMeta | None = meta or None  # type: ignore[assignment]
            if price.free:
                result = await self._forward(name, arguments, forward_meta)
                if call is not None and not result.get("isError"):
                    await self._store_free(call, result)
                return result
            hold = await self._hold(caller, price, amount, quantity, target, call)
            return await self._charged_call(hold, price, name, arguments, forward_meta, call)
        finally:  # the call's slot in flight, also when it was cancelled
            with anyio.CancelScope(shield=True):
                await self.charger.finish(permit)

    def _hold_size(self, price: ToolPrice, arguments: Mapping[str, Any]) -> tuple[int, Any]:
        """(the amount to hold, the quantity to rate it by: None for a flat price)."""
        if price.meter is None:
            return int(price.price or 0), None
        if price.quantity_source == "arguments":
            value = _dig(arguments, price.quantity_path)
            if isinstance(value, bool) or not isinstance(value, int | float | str) or value is None:
                raise MCPError(
                    code=RPC_CODES["invalid_request"],
                    message=f"the tool's price reads its quantity from {price.quantity!r}: give a number",
                    data={"code": "invalid_quantity", "quantity": price.quantity},
                )
            return 0, value
        return int(price.hold or 0), None

    async def _hold(
        self,
        caller: Principal,
        price: ToolPrice,
        amount: int,
        quantity: Any,
        target: str,
        call: CallKey | None,
    ) -> Hold:
        key = hold_key("mcp", f"{call.key}#{call.attempt}" if call is not None else new_id("call"))
        ttl = int(self.timeout) + 60
        try:
            return await self.charger.hold(
                caller,
                amount,
                idempotency_key=key,
                properties={"tool": target},
                ttl_seconds=ttl,
                meter=price.meter,  # with a quantity from the result: the amount is held
                quantity=quantity,
                before=self.calls.claim(call, ttl) if call is not None else None,
            )
        except InsufficientCredits as exc:
            raise self._payment_error(exc, amount or int(exc.details.get("required", 0))) from None
        except TollkeepError as exc:
            raise rpc_error(exc) from None

    def _payment_error(self, exc: InsufficientCredits, price: int) -> MCPError:
        data = payment_error_data(self.tk, exc, price)
        return MCPError(code=RPC_CODES["insufficient_credits"], message=exc.message, data=data)

    async def _charged_call(
        self,
        hold: Hold,
        price: ToolPrice,
        name: str,
        arguments: dict[str, Any],
        meta: types.RequestParamsMeta | None,
        call: CallKey | None,
    ) -> dict[str, Any]:
        failed = self.calls.failed(call) if call is not None else None
        try:
            result = await self._forward(name, arguments, meta)
        except BaseException:
            # a JSON-RPC error, an upstream timeout, a cancel or a disconnect: not charged
            await self.charger.release(hold, also=failed)
            raise
        if result.get("isError") and not price.charge_errors:
            await self.charger.release(hold, also=failed)
            return result
        quantity = None
        if price.quantity_source == "result":
            quantity = _dig(result.get("structuredContent") or {}, price.quantity_path)
            if isinstance(quantity, bool) or not isinstance(quantity, int | float | str):
                quantity = 0
        done = self.calls.done(call, result) if call is not None else None
        try:
            out = await self.charger.settle(hold, quantity=quantity, also=done)
        except TollkeepError as exc:  # a result-rated price above the hold, not covered; a cap
            await self.charger.release(hold, also=failed)
            if isinstance(exc, InsufficientCredits):
                data = payment_error_data(self.tk, exc, int(exc.details.get("required", 0)))
                raise MCPError(
                    code=RPC_CODES["insufficient_credits"], message=exc.message, data=data
                ) from None
            raise rpc_error(exc) from None
        result_meta = dict(result.get("_meta") or {})
        result_meta[CHARGE_META] = {"charged": out.get("charged"), "balance": out.get("balance")}
        return {**result, "_meta": result_meta}

    async def _forward(
        self, name: str, arguments: dict[str, Any], meta: types.RequestParamsMeta | None
    ) -> dict[str, Any]:
        return await self._upstream(self.upstream.call_tool(name, arguments, meta))

    async def _store_free(self, call: CallKey, result: dict[str, Any]) -> None:
        claim, done = self.calls.claim(call, int(self.timeout) + 60), self.calls.done(call, result)

        def fn(s: Any) -> None:
            claim(s)
            done(s, None)

        try:
            await self.tk.executor.acall(fn, key=call.customer_id)
        except TollkeepError:  # a concurrent retry stored it first: the answer is the same
            log.debug("free call %s already stored", call.key)

    async def _upstream(self, coro: Any) -> Any:
        """Await an upstream request within the timeout: -32066 ``upstream_timeout``; the
        upstream's own JSON-RPC errors pass through; a broken upstream is -32067."""
        try:
            with anyio.fail_after(self.timeout):
                return await coro
        except TimeoutError:
            raise MCPError(
                code=RPC_CODES["upstream_timeout"],
                message=f"the upstream did not answer within {self.timeout:g} s",
                data={"code": "upstream_timeout"},
            ) from None
        except MCPError as exc:
            if exc.code == types.CONNECTION_CLOSED:
                raise _unavailable(exc.message) from None
            raise
        except (anyio.ClosedResourceError, anyio.BrokenResourceError, OSError) as exc:
            raise _unavailable(str(exc) or type(exc).__name__) from None

    # ---- resources and prompts: passed through ------------------------------------------------
    async def list_resources(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> dict[str, Any]:
        await self.caller(ctx)
        out = await self._upstream(self.upstream.list_resources(params.cursor if params else None))
        return {**out, "cacheScope": "private"} if "cacheScope" in out else out

    async def list_resource_templates(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> dict[str, Any]:
        await self.caller(ctx)
        out = await self._upstream(self.upstream.list_resource_templates(params.cursor if params else None))
        return {**out, "cacheScope": "private"} if "cacheScope" in out else out

    async def read_resource(
        self, ctx: ServerRequestContext[Any, Any], params: types.ReadResourceRequestParams
    ) -> dict[str, Any]:
        await self.caller(ctx)
        out: dict[str, Any] = await self._upstream(self.upstream.read_resource(str(params.uri)))
        return out

    async def list_prompts(
        self, ctx: ServerRequestContext[Any, Any], params: types.PaginatedRequestParams | None
    ) -> dict[str, Any]:
        await self.caller(ctx)
        out = await self._upstream(self.upstream.list_prompts(params.cursor if params else None))
        return {**out, "cacheScope": "private"} if "cacheScope" in out else out

    async def get_prompt(
        self, ctx: ServerRequestContext[Any, Any], params: types.GetPromptRequestParams
    ) -> dict[str, Any]:
        await self.caller(ctx)
        out: dict[str, Any] = await self._upstream(self.upstream.get_prompt(params.name, params.arguments))
        return out

    # ---- serving ----------------------------------------------------------------------------
    def http_app(self, *, host: str = "127.0.0.1", path: str = "/mcp", connect: bool = True) -> Starlette:
        """The ASGI app serving streamable HTTP at ``path``. ``connect``: its lifespan connects
        the upstream (False: the caller holds ``upstream.connect()`` open around serving, in
        the same event loop). Bound to a loopback ``host``, requests must name a loopback Host
        (the SDK's DNS-rebinding guard)."""
        security = None
        if host not in ("127.0.0.1", "localhost", "::1"):
            security = TransportSecuritySettings(enable_dns_rebinding_protection=False)
        app = self.server.streamable_http_app(
            streamable_http_path=path, host=host, transport_security=security
        )
        if not connect:
            return app
        inner = app.router.lifespan_context

        @asynccontextmanager
        async def lifespan(a: Starlette) -> AsyncIterator[None]:
            async with self.upstream.connect(), inner(a):
                await self.refresh_tools()
                yield

        app.router.lifespan_context = lifespan
        return app

    async def serve_stdio(self) -> None:
        """Serve one agent on this process's stdin/stdout (``--stdio --key``)."""
        from mcp.server.stdio import stdio_server

        async with self.upstream.connect(), stdio_server() as (read, write):
            await self.server.run(read, write, self.server.create_initialization_options())


def _dig(value: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _replayed(stored: dict[str, Any]) -> dict[str, Any]:
    meta = dict(stored.get("_meta") or {})
    charge = dict(meta.get(CHARGE_META) or {})
    charge["replayed"] = True
    meta[CHARGE_META] = charge
    return {**stored, "_meta": meta}


def _unavailable(reason: str) -> MCPError:
    return MCPError(
        code=RPC_CODES["upstream_unavailable"],
        message=f"the upstream MCP server is unavailable: {reason}",
        data={"code": "upstream_unavailable"},
    )
