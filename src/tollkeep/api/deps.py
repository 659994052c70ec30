"""Request dependencies: the runtime, admin authentication, API-key / install-id principals."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool

from tollkeep.api.schemas import ErrorOut
from tollkeep.keys import ALL_SCOPES, Principal
from tollkeep.kit.actor import Actor
from tollkeep.kit.errors import AuthError, Forbidden, InvalidInput
from tollkeep.kit.jsonsafe import check_properties
from tollkeep.operators import SERVER_PREFIX
from tollkeep.runtime import Tollkeep

__all__ = [
    "ADMIN_ERRORS",
    "PUBLIC_ERRORS",
    "Admin",
    "AdminActor",
    "AdminRead",
    "AnyCaller",
    "Caller",
    "MaybeCaller",
    "Runtime",
    "ServerCaller",
    "acount_write",
    "actor_of",
    "admin",
    "admin_actor",
    "count_write",
    "customer_for",
    "errors",
    "optional_principal",
    "parse_body",
    "principal",
    "properties",
    "runtime",
    "server_only",
]

M = TypeVar("M", bound=BaseModel)


def parse_body(model: type[M], raw: bytes) -> M:
    """Parse and validate a JSON body in one pass (pydantic-core), with FastAPI's error shapes."""
    try:
        return model.model_validate_json(raw or b"")
    except ValidationError as exc:
        first = exc
    if any(e.get("type") == "json_invalid" for e in first.errors(include_url=False)):
        # pydantic-core's parser is stricter than Python's (a lone surrogate "\ud800" is "invalid
        # JSON" to it): whatever Python's json module reads goes through the same validation as
        # on every other route, so one input gets one answer everywhere
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            data = _UNREADABLE
        if data is not _UNREADABLE:
            try:
                return model.model_validate(data)
            except ValidationError as exc:
                first = exc
    errors = [{**e, "loc": ("body", *e.get("loc", ()))} for e in first.errors(include_url=False)]
    raise RequestValidationError(errors) from None


_UNREADABLE = object()


def count_write(request: Request, customer_id: str) -> None:
    """One usage or hold write for a customer: 429 ``rate_limited`` past the limit."""
    request.app.state.limiters.writes.hit(customer_id)


async def acount_write(request: Request, customer_id: str) -> None:
    """:func:`count_write` on the event loop (a shared Redis storage is called off it)."""
    await request.app.state.limiters.writes.ahit(customer_id)


@dataclass(frozen=True)
class ServerCaller:
    """The seller's backend, calling /v1 with a server key (``tk_sk_…``): acts for any customer
    it names (``customer_id``), within its scopes."""

    actor: Actor

    @property
    def key_id(self) -> str:
        return self.actor.id

    def require(self, scope: str) -> None:
        self.actor.require_scope(scope)


AnyCaller = Principal | ServerCaller


def customer_for(caller: AnyCaller, customer_id: str | None) -> str:
    """The customer a public call acts for: a buyer key's own (naming another is refused), or
    the one a server key names (it must name one)."""
    if isinstance(caller, ServerCaller):
        if not customer_id:
            raise InvalidInput(
                "a server key acts for the customer named by customer_id", code="customer_id_required"
            )
        return customer_id
    if customer_id is not None and customer_id != caller.customer_id:
        raise Forbidden("an API key acts for its own customer only", code="customer_mismatch")
    return caller.customer_id


def server_only(caller: AnyCaller) -> ServerCaller:
    if not isinstance(caller, ServerCaller):
        raise Forbidden("this call takes a server key (tk_sk_…)", code="server_key_required")
    return caller


def properties(tk: Tollkeep, value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Event properties within the configured bounds (422 ``properties_too_large`` beyond)."""
    if value:
        s = tk.settings
        check_properties(
            value, "properties", max_bytes=s.max_properties_bytes, max_keys=s.max_properties_keys
        )
    return value


def runtime(request: Request) -> Tollkeep:
    tk: Tollkeep = request.app.state.tollkeep
    return tk


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise AuthError("use 'Authorization: Bearer <token>'", code="invalid_authorization")
    return value.strip()


async def admin_actor(request: Request) -> Actor:
    """Who is calling an /admin route: the env admin token or an admin token from the database
    (``tka_…``), with its role; a read-only token may only read (GET). Server keys and buyer
    keys are not admin credentials. The actor is kept on the request for the audit log."""
    tk = runtime(request)
    token = _bearer(request)
    if token is None:
        raise AuthError("send 'Authorization: Bearer <admin token>'", code="invalid_admin_token")
    ip = request.client.host if request.client else None
    try:  # a database read on a cache miss: off the event loop
        actor: Actor | None = await run_in_threadpool(tk.operators.authenticate, token, ip)
    except AuthError:
        actor = None
    if actor is None or actor.kind != "admin":
        if tk.settings.admin_token is None and not await run_in_threadpool(tk.operators.any_admin_tokens):
            raise AuthError("the admin API is off: set TOLLKEEP_ADMIN_TOKEN", code="admin_disabled")
        raise AuthError("invalid admin token", code="invalid_admin_token")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        actor.require_write()
    request.state.actor = actor
    return actor


async def admin(request: Request, actor: Annotated[Actor, Depends(admin_actor)]) -> Tollkeep:
    """The runtime, behind an admin token (the actor is resolved once per request)."""
    return runtime(request)


def actor_of(request: Request) -> Actor:
    """The actor an admin dependency authenticated for this request."""
    actor: Actor = request.state.actor
    return actor


async def principal(request: Request) -> AnyCaller:
    """The caller of a public route: a buyer's API key, an anonymous ``X-Install-Id``, or the
    seller's server key."""
    tk = runtime(request)
    raw = _bearer(request)
    ip = request.client.host if request.client else None
    if raw is not None and raw.startswith(SERVER_PREFIX):
        try:
            actor = await run_in_threadpool(tk.operators.authenticate, raw, ip)
        except AuthError as exc:
            if exc.code == "invalid_token":  # the public API's code for a key it does not know
                raise AuthError("invalid API key", code="invalid_api_key") from None
            raise
        if actor.kind != "server":
            raise AuthError("invalid API key", code="invalid_api_key")
        return ServerCaller(actor)
    if raw is None:
        install = request.headers.get("x-install-id")
        if install is None:
            raise AuthError("send 'Authorization: Bearer <api key>'", code="missing_api_key")
        limiters = request.app.state.limiters
        cid = await run_in_threadpool(
            tk.customers.install_customer,
            install,
            # only a NEW install id counts against its address's hourly limit
            before_create=lambda: limiters.install_ids.hit(ip or "unknown"),
        )
        return Principal(cid, None, frozenset(ALL_SCOPES), anonymous=True)
    keys = tk.keys
    if not keys.well_formed(raw):
        raise AuthError("invalid API key", code="invalid_api_key")
    rec = keys.cached(raw)
    if rec is None:
        rec = await run_in_threadpool(keys.lookup, raw)
    elif keys.refresh_due(rec):
        asyncio.get_running_loop().run_in_executor(None, keys.refresh, raw, rec.key_id)
    return keys.check(raw, rec, ip)


async def optional_principal(request: Request) -> AnyCaller | None:
    """:func:`principal` when the request carries a credential (a key or an install id); None
    for an anonymous caller (a buyer who has no key yet)."""
    if request.headers.get("authorization") is None and request.headers.get("x-install-id") is None:
        return None
    return await principal(request)


# What a domain's routes declare: the runtime behind an admin token, the caller of a public
# route, the runtime alone; and the documented error responses of each side.
Admin = Annotated[Tollkeep, Depends(admin)]  # any admin token; a read-only one on GET only
AdminRead = Admin
AdminActor = Annotated[Actor, Depends(admin_actor)]
Caller = Annotated[AnyCaller, Depends(principal)]
MaybeCaller = Annotated[AnyCaller | None, Depends(optional_principal)]
Runtime = Annotated[Tollkeep, Depends(runtime)]


_ERROR_DOC = {
    401: "no or a bad credential",
    402: "insufficient_credits: nothing was charged",
    403: "a scope, an ownership or a role forbids it",
    404: "what the path or body names does not exist",
    409: "a conflict with the current state (see the code)",
    413: "body_too_large",
    422: "invalid input (see the code and details)",
    429: "cap_exceeded or rate_limited",
    500: "the verification found a problem (the report is the body)",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The error responses a route really gives, for its OpenAPI ``responses``."""
    return {c: {"model": ErrorOut, "description": _ERROR_DOC.get(c, "")} for c in statuses}


ADMIN_ERRORS: dict[int | str, dict[str, Any]] = {c: {"model": ErrorOut} for c in (401, 404, 409, 413, 422)}
PUBLIC_ERRORS: dict[int | str, dict[str, Any]] = {
    c: {"model": ErrorOut} for c in (401, 402, 403, 409, 413, 422, 429)
}
