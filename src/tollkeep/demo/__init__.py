"""What `tollkeep demo` puts behind its gateways: a small MCP server and a small HTTP API."""
