"""``tollkeep gateway …``: put tollkeep in front of a server with one command.

``gateway mcp`` wraps an MCP server (a stdio command after ``--``, or ``--upstream URL``) and
serves it, charged, at ``http://HOST:PORT/mcp`` (or on stdio for one local agent). Another
gateway adds its command to :data:`app` the same way (``@app.command("http")``).
"""

from __future__ import annotations

import contextlib
import shlex
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tollkeep.cli.common import CatalogOpt, DatabaseOpt, err, out, runtime
from tollkeep.config import masked_url
from tollkeep.gateway.http_cli import http as http_command

if TYPE_CHECKING:
    from tollkeep.gateway.mcp import McpGateway

__all__ = ["app", "parse_prices"]

app = typer.Typer(
    help="Put tollkeep in front of an MCP server or an HTTP API: every call charged.",
    no_args_is_help=True,
)


def parse_prices(specs: list[str]) -> dict[str, int]:
    """``TOOL=CREDITS`` (``tool`` or ``server/tool``; credits: ledger units, an integer ≥ 0)."""
    prices: dict[str, int] = {}
    for spec in specs:
        tool, sep, value = spec.rpartition("=")
        tool = tool.strip()
        if not sep or not tool or not value.strip().isdigit():
            raise typer.BadParameter(
                f"expected TOOL=CREDITS (e.g. search=5), got {spec!r}", param_hint="--price"
            )
        prices[tool] = int(value)
    return prices


@app.command(
    "mcp",
    context_settings={"allow_interspersed_args": False},
    epilog="Example: tollkeep gateway mcp --price search=5 -- python my_server.py",
)
def mcp(
    command: Annotated[
        list[str] | None, typer.Argument(help="The upstream MCP server's command and arguments (after --)")
    ] = None,
    upstream: Annotated[
        str | None, typer.Option("--upstream", help="A streamable-HTTP MCP server's URL instead of a command")
    ] = None,
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port", min=1, max=65535)] = 8090,
    price: Annotated[
        list[str] | None,
        typer.Option("--price", help="TOOL=CREDITS, overrides the catalog (repeatable)"),
    ] = None,
    default_price: Annotated[
        int | None, typer.Option("--default-price", min=0, help="Credits per call of every other tool")
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help='The upstream\'s name in the catalog key tools."NAME/TOOL" (default: the one it reports)'
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(
            min=0.1,
            help="Seconds an upstream call may take (default: the catalog's gateway.timeout_seconds, 120)",
        ),
    ] = None,
    stdio: Annotated[bool, typer.Option("--stdio", help="Serve one local agent on stdin/stdout")] = False,
    key: Annotated[
        str | None, typer.Option("--key", envvar="TOLLKEEP_GATEWAY_KEY", help="The agent's API key (--stdio)")
    ] = None,
    database: DatabaseOpt = None,
    catalog: CatalogOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Serve an MCP server's tools through tollkeep, charged per call (streamable HTTP at /mcp)."""
    import anyio

    from tollkeep.api.ratelimit import Limiters
    from tollkeep.gateway.core import Charger
    from tollkeep.gateway.mcp import McpGateway, Overrides
    from tollkeep.gateway.upstream import Upstream, UpstreamSpec

    if bool(command) == bool(upstream):
        raise typer.BadParameter("give the upstream's command after -- or --upstream URL (one of them)")
    if stdio and not key:
        raise typer.BadParameter("--stdio serves one agent: give its API key with --key", param_hint="--key")
    overrides = Overrides(parse_prices(price or []), default_price)
    spec = UpstreamSpec(command=tuple(command or ()), url=upstream, name=name)
    with runtime(database_url=database, catalog_path=catalog) as tk:
        charger = Charger(tk, limit_writes=Limiters(tk.settings).writes.hit)
        gw = McpGateway(
            tk, Upstream(spec), overrides=overrides, charger=charger, key=key, timeout_seconds=timeout
        )
        if stdio:
            with contextlib.suppress(KeyboardInterrupt):
                anyio.run(gw.serve_stdio)
            return
        _serve_http(gw, host, port, log_level, database_label=masked_url(tk.db.url))


def _serve_http(gw: McpGateway, host: str, port: int, log_level: str, *, database_label: str) -> None:
    """Connect the upstream (a clear one-line failure if it cannot be), print what is served,
    then serve, all in one event loop."""
    import anyio
    import uvicorn

    url = f"http://{host}:{port}/mcp"
    config = uvicorn.Config(
        gw.http_app(host=host, connect=False),
        host=host,
        port=port,
        log_level=log_level,
        timeout_graceful_shutdown=5,
    )

    async def run() -> None:
        async with AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(gw.upstream.connect())
                tools = await gw.refresh_tools()
            except Exception as exc:
                raise _Unreachable(_reason(exc)) from None
            server = uvicorn.Server(config)

            async def announce() -> None:  # once it listens: a client may connect right away
                while not server.started and not server.should_exit:
                    await anyio.sleep(0.02)
                if server.started:
                    _print_ready(gw, url, tools, database_label)

            async with anyio.create_task_group() as tg:
                tg.start_soon(announce)
                await server.serve()
            if not server.started:
                raise _Unreachable(f"cannot listen on {host}:{port} (in use?)", what="port")

    try:
        anyio.run(run, backend_options={"use_uvloop": True})
    except _Unreachable as exc:
        label = gw.upstream.spec.describe() if exc.what == "upstream" else f"{host}:{port}"
        err.print(f"[red]cannot start the gateway[/red]: {label}: {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass


class _Unreachable(Exception):
    def __init__(self, reason: str, *, what: str = "upstream") -> None:
        super().__init__(reason)
        self.what = what


def _reason(exc: BaseException) -> str:
    """The first real cause inside (possibly nested) exception groups, in one line."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not text.startswith(type(exc).__name__) else text


_LIST_BODY = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{'
    '"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}'
)


def _print_ready(gw: McpGateway, url: str, tools: list[Any], database_label: str) -> None:
    unit = gw.tk.catalog.credits.name
    out.print(
        f"tollkeep MCP gateway on [bold]{url}[/bold]  upstream {gw.upstream.spec.describe()} "
        f"({gw.upstream.name})  database {database_label}  catalog {gw.tk.catalog.version}",
        soft_wrap=True,
    )
    refused = []
    for tool in tools:
        price = gw.price_of(tool.name)
        if price is None:
            refused.append(tool.name)
            continue
        shown = gw.shown_price(price)
        if price.free:
            text = "free"
        elif price.meter is not None:
            text = f"metered: {price.meter}, quantity from {price.quantity}"
        else:
            text = f"{shown['credits']} {unit}{'' if shown['credits'] == 1 else 's'} per call"
        extra = f"  (plans with '{price.feature}')" if price.feature else ""
        out.print(f"  {tool.name:<24} {text}{extra}", soft_wrap=True)
    if refused:
        err.print(
            f"[yellow]unpriced, refused: {', '.join(refused)}[/yellow] "
            '(price them with --price TOOL=CREDITS, --default-price N or [tools."NAME/TOOL"] in the catalog)',
            soft_wrap=True,
        )
    out.print(
        "\nAn agent needs an API key with credits:\n"
        "  tollkeep customers create alice && tollkeep credits grant alice 100 "
        "&& tollkeep keys create alice\n"
        "Then, with the official MCP client (pip install mcp):\n"
        f"  async with httpx.AsyncClient(headers={{'Authorization': 'Bearer ' + KEY}}) as http, "
        f"Client(streamable_http_client({url!r}, http_client=http)) as c:\n"
        "      print(await c.call_tool('TOOL', {...}))\n"
        "or curl (MCP 2026-07-28: one self-contained request, no session):\n"
        f"  curl -s {shlex.quote(url)} -H \"Authorization: Bearer $KEY\" -H 'Content-Type: application/json' "
        "-H 'Accept: application/json, text/event-stream' -H 'MCP-Protocol-Version: 2026-07-28' "
        "-H 'Mcp-Method: tools/list' -d '" + _LIST_BODY + "'",
        soft_wrap=True,
        highlight=False,
    )


# `tollkeep gateway http`: the HTTP gateway's command (src/tollkeep/gateway/http_cli.py)
app.command("http")(http_command)
