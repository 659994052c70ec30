"""Billing inside a Starlette / FastAPI app, without a separate hop: an ASGI middleware and a
route decorator, on the same ledger calls as the HTTP gateway.

.. code-block:: python

    app = FastAPI()
    app.add_middleware(TollkeepMiddleware, tollkeep=Tollkeep(Settings()))

    @app.get("/search")
    @charge("search", quantity=lambda request: int(request.query_params.get("n", "10")))
    async def search(q: str) -> dict: ...

* :class:`TollkeepMiddleware` makes the request's billing available to the routes and, when
  a charged route's response is complete, **settles** its hold if the status is charged
  (2xx/3xx by default) — or **releases** it: an error status, an exception, a client that
  went away before the last byte. It authenticates nothing by itself: unpriced routes are
  untouched.
* :func:`charge` (``meter``, ``quantity`` — a number or a function of the request — or a fixed
  ``amount``) authenticates the caller's key (``Authorization: Bearer`` / ``X-API-Key``: 401,
  403 ``insufficient_scope``), holds the price (402 ``insufficient_credits`` with a ``topup``),
  then runs the endpoint. An ``Idempotency-Key`` header makes the hold's key: a retry of a
  charged call is 409 ``idempotency_key_used`` and the endpoint does not run again.
  The caller's principal is at ``request.state.tollkeep_principal``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse

from tollkeep.gateway.charging import Charger, Held
from tollkeep.keys import Principal
from tollkeep.kit.errors import TollkeepError
from tollkeep.runtime import Tollkeep

__all__ = ["TollkeepMiddleware", "charge"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
F = TypeVar("F", bound=Callable[..., Any])

STATE_KEY = "tollkeep_billing"


@dataclass
class _Billing:
    """One request's holds, resolved by the middleware when the response is done."""

    charger: Charger
    charge_statuses: frozenset[int]
    holds: list[tuple[Principal, Held]] = field(default_factory=list)


class TollkeepMiddleware:
    """ASGI middleware: settles or releases the holds :func:`charge` made for a request once
    its response is complete (see the module's docstring)."""

    def __init__(
        self,
        app: Callable[[Scope, Receive, Send], Awaitable[None]],
        *,
        tollkeep: Tollkeep,
        charge_statuses: frozenset[int] = frozenset({2, 3}),
        hold_ttl_seconds: int = 900,
    ) -> None:
        self.app = app
        self.charger = Charger(tollkeep, hold_ttl=hold_ttl_seconds)
        self.charge_statuses = charge_statuses

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        billing = _Billing(self.charger, self.charge_statuses)
        scope.setdefault("state", {})[STATE_KEY] = billing
        status = 0
        complete = False

        async def watched(msg: Message) -> None:
            nonlocal status, complete
            if msg["type"] == "http.response.start":
                status = int(msg["status"])
            elif msg["type"] == "http.response.body" and not msg.get("more_body", False):
                complete = True
            await send(msg)

        disconnected = False

        async def receive_watched() -> Message:
            nonlocal disconnected
            msg = await receive()
            # after the last byte uvicorn answers receive() with http.disconnect: only a
            # disconnect before the response is complete counts
            if msg["type"] == "http.disconnect" and not complete:
                disconnected = True
            return msg

        try:
            await self.app(scope, receive_watched, watched)
        finally:
            charged = complete and not disconnected and status // 100 in self.charge_statuses
            for p, held in billing.holds:
                if charged:
                    await self.charger.settle_parts(p, [held], held.amount, None)
                else:
                    await self.charger.release(p, held)


def _request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Request:
    for value in (*args, *kwargs.values()):
        if isinstance(value, Request):
            return value
    raise RuntimeError("@charge needs the endpoint's Request (Starlette passes it; FastAPI: see charge())")


def _error(exc: TollkeepError, charger: Charger) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(charger.topup(exc).to_dict(), status_code=exc.status, headers=headers)


def charge(
    meter: str | None = None,
    *,
    quantity: int | Decimal | Callable[[Request], Any] | None = None,
    amount: int | None = None,
) -> Callable[[F], F]:
    """Charge each successful call of the decorated endpoint: ``meter`` rated for ``quantity``
    (1 when none; a function of the request for a quantity known up front), or a fixed
    ``amount`` of ledger units. Needs :class:`TollkeepMiddleware` on the app. Works on
    Starlette endpoints (``async def ep(request)``) and FastAPI ones (the decorator adds a
    hidden ``Request`` parameter when the endpoint has none)."""
    if meter is None and amount is None:
        raise ValueError("charge() takes a meter, an amount, or both")

    def deco(fn: F) -> F:
        try:  # string annotations (PEP 563) resolved in the endpoint's own module
            sig = inspect.signature(fn, eval_str=True)
        except (NameError, TypeError):
            sig = inspect.signature(fn)
        has_request = any(p.annotation in (Request, "Request") for p in sig.parameters.values())
        extra = "tollkeep_request"

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            request = kwargs.pop(extra) if extra in kwargs else _request_of(args, kwargs)
            billing: _Billing | None = request.scope.get("state", {}).get(STATE_KEY)
            if billing is None:
                raise RuntimeError("@charge needs TollkeepMiddleware on the app")
            charger = billing.charger
            permit = None
            try:
                headers = {k.lower(): v for k, v in request.scope["headers"]}
                client = request.client
                p = await charger.principal(headers, client.host if client else None)
                permit = await charger.admit(p, f"{request.method} {request.url.path}", amount or 1)
                qty = quantity(request) if callable(quantity) else quantity
                idem = request.headers.get("idempotency-key")
                props = {"request": f"{request.method} {request.url.path}"[:200]}
                held, _ = await charger.call_hold(
                    p,
                    "gw-asgi",
                    idem,
                    amount=amount,
                    meter=meter,
                    quantity=qty,
                    properties=props,
                )
            except TollkeepError as exc:
                await charger.finish(permit)
                return _error(exc, charger)
            request.state.tollkeep_principal = p
            billing.holds.append((p, held))
            try:
                result = fn(*args, **kwargs)
                if inspect.isawaitable(result):
                    result = await result
            finally:  # the call's slot in flight: the handler is done
                await charger.finish(permit)
            return result

        if not has_request:
            params = [
                *sig.parameters.values(),
                inspect.Parameter(extra, inspect.Parameter.KEYWORD_ONLY, annotation=Request),
            ]
            wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
