"""Every error leaves as ``{"error": {"code", "message", ...}}``; a 500 never shows a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollkeep.kit.errors import TollkeepError

__all__ = [
    "BodyLimitMiddleware",
    "HotRoutes",
    "error_body",
    "install_error_handlers",
    "tollkeep_error_response",
    "validation_error_response",
]

log = logging.getLogger("tollkeep.api")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
}


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"


def tollkeep_error_response(exc: TollkeepError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    retry = exc.details.get("retry_after")
    if isinstance(retry, int):
        headers = {**(headers or {}), "Retry-After": str(retry)}
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def validation_error_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return JSONResponse(error_body("invalid_json", "the request body is not valid JSON"), status_code=400)
    details = [{"field": _loc(e), "reason": str(e.get("msg", ""))} for e in errors[:20]]
    first = details[0] if details else {"field": "body", "reason": "invalid"}
    return JSONResponse(
        error_body("invalid_request", f"{first['field']}: {first['reason']}", details=details),
        status_code=422,
    )


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TollkeepError)
    async def _tollkeep(_req: Request, exc: TollkeepError) -> JSONResponse:
        return tollkeep_error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
        return JSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _bug(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse(
            error_body("internal_error", "internal error; it has been logged"), status_code=500
        )


class _TooLarge(StarletteHTTPException):
    """Raised from ``receive``: FastAPI passes HTTPExceptions through its body parsing (other
    errors there become a 400), so the client gets our 413 envelope on every route."""

    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"request body is larger than {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413, by Content-Length or while streaming,
    and URLs carrying a NUL character with a 400."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # no identifier or filter of ours contains NUL, and PostgreSQL cannot even compare one
            await self._reject(send, 400, error_body("invalid_text", "the URL contains a NUL character"))
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.max_bytes + 1
                break
        if declared is not None:
            # the HTTP server never delivers more than Content-Length: check once, wrap nothing
            if declared > self.max_bytes:
                await self._reject(send)
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
                if seen > self.max_bytes:
                    raise _TooLarge(self.max_bytes)
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
                await self._reject(send)

    async def _reject(self, send: Send, status: int = 413, payload: dict[str, Any] | None = None) -> None:
        import json

        body = json.dumps(
            payload or error_body("body_too_large", f"request body is larger than {self.max_bytes} bytes")
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

    def __init__(self, app: ASGIApp, routes: dict[tuple[str, str], Handler]) -> None:
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
                    response = tollkeep_error_response(exc)
                except RequestValidationError as exc:
                    response = validation_error_response(exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
