"""The demo's upstream MCP server (the official SDK, stdio): a priced tool and a free one.

python -m tollkeep.demo.weather_mcp        # what `tollkeep demo` runs behind /mcp
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer

server = MCPServer("weather")

_TEMPS = {"paris": 14, "lisbon": 19, "oslo": 3, "tokyo": 16}


@server.tool()
def forecast(city: str) -> dict[str, object]:
    """Tomorrow's forecast for a city (the demo prices it at 2 credits a call)."""
    temp = _TEMPS.get(city.strip().lower(), 12)
    return {"city": city, "tomorrow": {"high_c": temp + 3, "low_c": temp - 4, "sky": "clouds then sun"}}


@server.tool()
def cities() -> list[str]:
    """The cities the forecast knows well (free)."""
    return sorted(_TEMPS)


if __name__ == "__main__":
    server.run()
