"""The gateway: tollkeep in front of an MCP server (``mcp``) or an HTTP API, charging every
call an agent makes through it (authorize → hold → forward → settle | release).

The charging seam both gateways share is :mod:`tollkeep.gateway.core`; the idempotent-call
records are :mod:`tollkeep.gateway.calls`. Submodules are imported where used, so importing
the package (its table, for Alembic) pulls in neither the MCP SDK nor the runtime.
"""

__all__: list[str] = []
