"""``tollkeep gateway http``: the billing reverse proxy in front of one HTTP API (docs/gateway-http.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import CatalogOpt, DatabaseOpt, err, out, runtime
from tollkeep.kit.errors import TollkeepError

__all__ = ["http"]


def http(
    upstream: Annotated[str, typer.Option("--upstream", help="The API to put behind the gateway (base URL)")],
    host: Annotated[str, typer.Option(help="Bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port")] = 8787,
    price: Annotated[
        list[str] | None,
        typer.Option(
            "--price",
            help="'METHOD /path/pattern=CREDITS' (repeatable; before the catalog's routes; "
            "METHOD may be *, {name} matches one segment, a trailing * the rest)",
        ),
    ] = None,
    upstream_header: Annotated[
        list[str] | None,
        typer.Option(
            "--upstream-header",
            help="'Name: value' sent upstream on every request, e.g. the upstream's own "
            "'Authorization: Bearer …' (repeatable; the caller's key is never forwarded)",
        ),
    ] = None,
    unpriced: Annotated[
        str, typer.Option(help="Routes with no price: 'free' (forwarded, key required) or 'refuse' (404)")
    ] = "free",
    llm_meter: Annotated[str, typer.Option(help="The tokens-priced meter LLM endpoints are charged on")] = (
        "llm_tokens"
    ),
    default_max_tokens: Annotated[
        int, typer.Option(help="Output tokens held for an LLM request that names no max_tokens")
    ] = 1024,
    increment_tokens: Annotated[
        int, typer.Option(help="Output tokens each extension of a stream's hold covers (the overspend bound)")
    ] = 256,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body forwarded")] = 10 * 1024 * 1024,
    timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the upstream between two reads")
    ] = 300.0,
    database: DatabaseOpt = None,
    catalog: CatalogOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
) -> None:
    """Put an HTTP API (or an LLM endpoint) behind tollkeep, charged per call or per token.

    Forwards every path to --upstream: LLM endpoints are charged by the token, other routes by
    --price or the catalog's routes. Needs a migrated database (TOLLKEEP_DATABASE_URL;
    `tollkeep migrate`)."""
    import uvicorn

    from tollkeep.api.ratelimit import Limiters
    from tollkeep.cli.server import uvicorn_options
    from tollkeep.gateway.http import GatewayConfig, HttpGateway
    from tollkeep.gateway.proxy import Upstream, parse_header, parse_price

    if unpriced not in ("free", "refuse"):
        raise typer.BadParameter("free or refuse", param_hint="--unpriced")
    if not upstream.startswith(("http://", "https://")):
        raise typer.BadParameter("an http:// or https:// URL", param_hint="--upstream")
    try:
        routes = tuple(parse_price(p) for p in price or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--price") from None
    try:
        headers = tuple(parse_header(h) for h in upstream_header or ())
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--upstream-header") from None
    config = GatewayConfig(
        upstream=Upstream("default", upstream.rstrip("/"), headers),
        prices=routes,
        unpriced=unpriced,
        llm_meter=llm_meter,
        default_max_tokens=default_max_tokens,
        increment_tokens=increment_tokens,
        max_body_bytes=max_body_bytes,
        read_timeout=timeout,
    )
    with runtime(database_url=database, catalog_path=catalog) as tk:
        # charged calls count against the per-customer write limit (TOLLKEEP_RATE_LIMIT_USAGE)
        gw = HttpGateway(tk, config, limit_writes=Limiters(tk.settings).writes.hit)
        _banner(gw, host, port)
        if tk.settings.run_workers:  # the sweeper releases holds a crash left behind
            tk.start_workers()
        options = {**uvicorn_options(tk.settings), "host": host, "port": port}
        uvicorn.run(gw, log_level=log_level, lifespan="on", timeout_graceful_shutdown=5, **options)


def _banner(gw: object, host: str, port: int) -> None:
    from tollkeep.gateway.http import HttpGateway
    from tollkeep.gateway.llm import LLM_PATHS

    assert isinstance(gw, HttpGateway)
    cat = gw.tk.catalog
    base = f"http://{host}:{port}"
    out.print(
        f"tollkeep HTTP gateway on [bold]{base}[/bold] → {gw.config.upstream.url}  (catalog {cat.version})"
    )
    table = gw.routes()
    if table.routes:
        out.print("priced routes (first match wins):")
        for r in table.routes:
            what = f"{r.price} {cat.credits.ledger_name}" if r.price is not None else f"meter {r.meter}"
            extra = f"  (plan feature {r.feature})" if r.feature else ""
            out.print(f"  {r.method:6} {r.path}  {what}{extra}", markup=False)
    try:
        meter = cat.meter(gw.config.llm_meter)
        models = ", ".join(sorted(meter.price.models)) if meter.price is not None else ""
        default = " + default price" if meter.price is not None and meter.price.default else ""
        out.print(
            f"LLM endpoints ({', '.join(LLM_PATHS)}): by the token on meter {meter.key} "
            f"({models or 'no models'}{default})",
            markup=False,
        )
    except TollkeepError:
        err.print(f"[yellow]no meter {gw.config.llm_meter!r}: LLM endpoints will be refused[/yellow]")
    rule = "forwarded free (a key is still required)" if gw.config.unpriced == "free" else "refused (404)"
    out.print(f"other routes: {rule}")
    out.print("a key:  tollkeep customers create alice && tollkeep keys create alice  (then grant credits:")
    out.print("        tollkeep credits grant alice 1000)")
    out.print(
        f'try:    curl -H "Authorization: Bearer <key>" {base}/v1/chat/completions '
        '-d \'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}\'',
        markup=False,
        soft_wrap=True,
    )
