"""The MCP upstreams ``tollkeep serve`` gateways: each ``[gateway.upstreams.<name>]`` of the
catalog is connected at start-up and served, charged, at ``/mcp/<name>`` (and at ``/mcp`` when
it is the only one), on the server's own port, database and limits — the same
:class:`~tollkeep.gateway.mcp.McpGateway` as ``tollkeep gateway mcp``.

An upstream that cannot be reached at start-up is logged and left out (the API still serves);
the catalog's upstreams are read at start-up only (a change takes a restart; prices reload).
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from typing import Any

from starlette.routing import Route

from tollkeep.gateway.core import Charger
from tollkeep.gateway.mcp import McpGateway
from tollkeep.gateway.upstream import Upstream, UpstreamSpec
from tollkeep.runtime import Tollkeep

__all__ = ["mount_upstreams"]

log = logging.getLogger("tollkeep.gateway")


async def mount_upstreams(app: Any, tk: Tollkeep, stack: AsyncExitStack, *, host: str) -> list[str]:
    """Connect every catalog upstream (closed with ``stack``) and add its route to ``app``;
    returns the paths served."""
    upstreams = tk.catalog.tools.upstreams
    served: list[str] = []
    for name, up in upstreams.items():
        spec = UpstreamSpec(command=up.command, url=up.url, name=name)
        gw = McpGateway(tk, Upstream(spec), charger=Charger(tk, limit_writes=tk.limits.writes.hit))
        sub = gw.http_app(host=host, path=f"/mcp/{name}")
        try:
            await stack.enter_async_context(sub.router.lifespan_context(sub))
        except Exception as exc:  # one bad upstream must not keep the API down
            log.error("MCP upstream %s (%s) left out: %s", name, spec.describe(), exc)
            continue
        paths = [f"/mcp/{name}"] + (["/mcp"] if len(upstreams) == 1 else [])
        for route in sub.routes:
            if isinstance(route, Route) and route.path == f"/mcp/{name}":
                for path in paths:
                    app.router.routes.append(Route(path, endpoint=route.endpoint, include_in_schema=False))
        served += paths
        log.info("MCP upstream %s (%s) served at %s", name, spec.describe(), ", ".join(paths))
    return served
