"""ASGI middleware ahead of FastAPI: the body size limit (and NUL in URLs), and the hot routes
served before the router. Errors leave in the envelope of :mod:`tollkeep.api.errors`."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollkeep.api.errors import error_body, tollkeep_error_response, validation_error_response, with_topup
from tollkeep.kit.errors import TollkeepError

__all__ = ["BodyLimitMiddleware", "HotRoutes"]


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTPExceptions through its body parsing (other
    errors there become a 400), so the client gets our 413 envelope on every route."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413, by Content-Length or while streaming,
    and URLs carrying a NUL character with a 400."""

    def __init__(self, app: ASGIApp, max_bytes: int, by_prefix: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default_max = max_bytes
        # paths with a limit of their own (provider webhooks: bigger than an API call)
        self.by_prefix = tuple((by_prefix or {}).items())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # no identifier or filter of ours contains NUL, and PostgreSQL cannot even compare one
            await self._reject(send, 400, error_body("invalid_text", "the URL contains a NUL character"))
            return
        max_bytes = self.default_max
        for prefix, limit in self.by_prefix:
            if scope["path"].startswith(prefix):
                max_bytes = limit
                break
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = max_bytes + 1
                break
        if declared is not None:
            # the HTTP server never delivers more than Content-Length: check once, wrap nothing
            if declared > max_bytes:
                await self._reject(send, limit=max_bytes)
            else:
                await self.app(scope, receive, send)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > max_bytes:
                    raise _TooLarge(max_bytes)
            return msg

        async def tracking_send(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._reject(send, limit=max_bytes)

    async def _reject(
        self, send: Send, status: int = 413, payload: dict[str, Any] | None = None, *, limit: int = 0
    ) -> None:
        body = json.dumps(
            payload or error_body("body_too_large", f"request body is larger than {limit} bytes")
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


Handler = Callable[[Request], Awaitable[Response]]


class HotRoutes:
    """Serves a few hot routes before FastAPI's router and request machinery.

    ``POST /v1/usage`` is the request the product lives on; routing it through the router,
    the exception middleware and FastAPI's request handler cost more than the charge itself.
    The handler is the very function the documented FastAPI route calls, and errors get the
    same envelope, so the contract (and the OpenAPI spec) are unchanged.
    """

    def __init__(self, app: ASGIApp, routes: Mapping[tuple[str, str], Handler]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except TollkeepError as exc:
                    response = tollkeep_error_response(with_topup(request, exc))
                except RequestValidationError as exc:
                    response = validation_error_response(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
