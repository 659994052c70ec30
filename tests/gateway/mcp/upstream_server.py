"""A real upstream MCP server for the gateway tests, built with the official SDK.

Run as ``python upstream_server.py`` (stdio) or ``python upstream_server.py http PORT``
(streamable HTTP at /mcp). Every tool call appends its tool name to the file named by
``UPSTREAM_CALLS`` (when set), so a test can count what reached the upstream.
"""

from __future__ import annotations

import os
import sys

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError

server = MCPServer("upstream")


def _count(tool: str) -> None:
    path = os.environ.get("UPSTREAM_CALLS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(tool + "\n")


@server.tool()
def search(query: str, n: int = 3) -> dict[str, object]:
    """Search the catalogue (priced)."""
    _count("search")
    return {"results": [f"{query}-{i}" for i in range(n)], "count": n}


@server.tool()
def echo(text: str) -> str:
    """Echo the text back (free)."""
    _count("echo")
    return text


@server.tool()
def broken() -> str:
    """Always fails with a tool error (isError: true)."""
    _count("broken")
    raise ToolError("the tool failed")


@server.tool()
def rpc_error() -> str:
    """Always fails with a JSON-RPC error."""
    _count("rpc_error")
    raise MCPError(code=-32050, message="upstream refused")


@server.tool()
async def slow(seconds: float = 30.0) -> str:
    """Sleeps (for cancel, disconnect and timeout tests)."""
    _count("slow")
    await anyio.sleep(seconds)
    return "done"


@server.tool()
def premium() -> str:
    """Only for plans with the 'pro' feature."""
    _count("premium")
    return "premium answer"


@server.tool()
def unlisted() -> str:
    """A tool the test catalog gives no price."""
    _count("unlisted")
    return "unlisted answer"


@server.tool()
def fetch(n: int) -> dict[str, object]:
    """Fetch n items (metered: the quantity is the argument n)."""
    _count("fetch")
    return {"items": list(range(n))}


@server.tool()
def scan(found: int) -> dict[str, object]:
    """Scan; charged by the count in its result."""
    _count("scan")
    return {"count": found}


@server.tool()
def crash() -> str:
    """The upstream process dies mid-call."""
    _count("crash")
    os._exit(3)


@server.resource("notes://readme")
def readme() -> str:
    """A resource passed through."""
    return "read me"


@server.prompt()
def greet(name: str) -> str:
    """A prompt passed through."""
    return f"Hello {name}"


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
