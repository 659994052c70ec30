"""The MCP server behind the gateway: a stdio command (started once, shared by every caller)
or a streamable-HTTP URL, reached with the official SDK's client (it negotiates the upstream's
revision: ``server/discover`` on a 2026-07-28 server, the initialize handshake on an older one).

One client session carries every caller's requests concurrently (JSON-RPC multiplexes them).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import mcp_types as types
from mcp import Client
from mcp.client.stdio import StdioServerParameters

__all__ = ["SERVER_INFO_META", "Upstream", "UpstreamSpec", "clean"]

SERVER_INFO_META = "io.modelcontextprotocol/serverInfo"


@dataclass(frozen=True)
class UpstreamSpec:
    """Where the upstream is: ``command`` (stdio) or ``url`` (streamable HTTP); ``name``: the
    server part of its tools' catalog keys (``[tools."<name>/<tool>"]``), default the name the
    upstream reports (or ``"upstream"``)."""

    command: Sequence[str] = ()
    url: str | None = None
    name: str | None = None
    env: dict[str, str] | None = field(default=None, hash=False)

    def __post_init__(self) -> None:
        if bool(self.command) == bool(self.url):
            raise ValueError("an upstream is a command (stdio) or a URL (streamable HTTP), exactly one")

    def describe(self) -> str:
        return self.url if self.url else " ".join(self.command)


def clean(result: Any) -> dict[str, Any]:
    """An upstream result as the gateway passes it on: JSON, without the upstream's own
    server-info stamp (the gateway answers as itself)."""
    out: dict[str, Any] = (
        result.model_dump(by_alias=True, mode="json", exclude_none=True)
        if hasattr(result, "model_dump")
        else dict(result)
    )
    meta = out.get("_meta")
    if isinstance(meta, dict) and SERVER_INFO_META in meta:
        meta = {k: v for k, v in meta.items() if k != SERVER_INFO_META}
        if meta:
            out["_meta"] = meta
        else:
            out.pop("_meta")
    return out


class Upstream:
    """A connected upstream (use ``async with upstream.connect():``)."""

    def __init__(self, spec: UpstreamSpec) -> None:
        self.spec = spec
        self._client: Client | None = None

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[Upstream]:
        target: str | StdioServerParameters
        if self.spec.url:
            target = self.spec.url
        else:
            env = dict(os.environ) if self.spec.env is None else self.spec.env
            cmd = list(self.spec.command)
            target = StdioServerParameters(command=cmd[0], args=cmd[1:], env=env)
        async with Client(target, cache=None) as client:
            self._client = client
            try:
                yield self
            finally:
                self._client = None

    @property
    def client(self) -> Client:
        if self._client is None:
            raise RuntimeError("the upstream is not connected")
        return self._client

    @property
    def name(self) -> str:
        if self.spec.name:
            return self.spec.name
        info = self._client.server_info if self._client is not None else None
        return info.name if info is not None and info.name else "upstream"

    @property
    def capabilities(self) -> types.ServerCapabilities:
        return self.client.server_capabilities

    # ---- requests (results as JSON dicts) -------------------------------------------------------
    async def list_tools(self, cursor: str | None = None) -> types.ListToolsResult:
        return await self.client.session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))

    async def all_tools(self) -> list[types.Tool]:
        tools: list[types.Tool] = []
        cursor: str | None = None
        for _ in range(100):
            page = await self.list_tools(cursor)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        return tools

    async def call_tool(
        self, name: str, arguments: dict[str, Any] | None, meta: types.RequestParamsMeta | None
    ) -> dict[str, Any]:
        result = await self.client.session.call_tool(name, arguments, meta=meta, allow_input_required=True)
        return clean(result)

    async def list_resources(self, cursor: str | None) -> dict[str, Any]:
        params = types.PaginatedRequestParams(cursor=cursor)
        return clean(await self.client.session.list_resources(params=params))

    async def list_resource_templates(self, cursor: str | None) -> dict[str, Any]:
        params = types.PaginatedRequestParams(cursor=cursor)
        return clean(await self.client.session.list_resource_templates(params=params))

    async def read_resource(self, uri: str) -> dict[str, Any]:
        return clean(await self.client.session.read_resource(uri))

    async def list_prompts(self, cursor: str | None) -> dict[str, Any]:
        params = types.PaginatedRequestParams(cursor=cursor)
        return clean(await self.client.session.list_prompts(params=params))

    async def get_prompt(self, name: str, arguments: dict[str, str] | None) -> dict[str, Any]:
        return clean(await self.client.session.get_prompt(name, arguments))
