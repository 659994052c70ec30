"""Every error leaves as ``{"error": {"code", "message", ...}}``; a 500 never shows a stack trace."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tollkeep.kit.errors import TollkeepError

__all__ = [
    "error_body",
    "install_error_handlers",
    "tollkeep_error_response",
    "validation_error_response",
    "with_topup",
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
    extra = getattr(exc, "headers", None)  # a rate limit's RateLimit-* headers (tollkeep.ratelimit)
    if extra:
        headers = {**(headers or {}), **extra}
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


def with_topup(request: Request, exc: TollkeepError) -> TollkeepError:
    """A 402 says how to top up: the checkout route and the packs on sale (an agent can act on
    it without reading the docs)."""
    if exc.code == "insufficient_credits" and "topup" not in exc.details:
        tk = getattr(request.app.state, "tollkeep", None)
        if tk is not None:
            exc.details["topup"] = tk.topup_hint()
    return exc


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(TollkeepError)
    async def _tollkeep(req: Request, exc: TollkeepError) -> JSONResponse:
        return tollkeep_error_response(with_topup(req, exc))

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
