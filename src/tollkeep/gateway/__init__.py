"""The gateway: tollkeep in front of an MCP server (``mcp``) or an HTTP API, charging every
call an agent makes through it (authorize → hold → forward → settle | release).

The charging seam both gateways share is :mod:`tollkeep.gateway.core`; the idempotent-call
records are :mod:`tollkeep.gateway.calls`. Names are imported lazily, so importing the package
(its table, for Alembic) pulls in neither the MCP SDK nor the runtime.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollkeep.gateway.calls import Calls
    from tollkeep.gateway.core import Charger, Hold, hold_key, payment_error_data, raw_key
    from tollkeep.gateway.mcp import RPC_CODES, McpGateway, Overrides
    from tollkeep.gateway.upstream import Upstream, UpstreamSpec

__all__ = [
    "RPC_CODES",
    "Calls",
    "Charger",
    "Hold",
    "McpGateway",
    "Overrides",
    "Upstream",
    "UpstreamSpec",
    "hold_key",
    "payment_error_data",
    "raw_key",
]

_WHERE = {
    "Calls": "calls",
    "Charger": "core",
    "Hold": "core",
    "hold_key": "core",
    "payment_error_data": "core",
    "raw_key": "core",
    "RPC_CODES": "mcp",
    "McpGateway": "mcp",
    "Overrides": "mcp",
    "Upstream": "upstream",
    "UpstreamSpec": "upstream",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(name)
    return getattr(import_module(f"tollkeep.gateway.{module}"), name)
