"""The HTTP gateway: a billing reverse proxy in front of one upstream HTTP API.

Every request needs a buyer's API key (``Authorization: Bearer`` or ``X-API-Key``), which is
stripped before the request goes upstream (the upstream's own credentials are added instead).
What a request costs:

* **LLM endpoints** (``gateway/llm.py``): by the model's input/output token prices on the
  catalog's tokens meter (``llm_tokens`` by default). An estimate is held before forwarding
  (the prompt's estimated tokens + ``max_tokens`` of output, or ``default_max_tokens``), the
  actual ``usage`` is charged when the answer is complete. A stream extends its reservation
  with more holds of ``increment_tokens`` of output as it flows, and is cut with an SSE
  ``event: error`` (``insufficient_credits``) when the wallet cannot cover the next one.
* **Priced routes**: ``--price 'METHOD /path=N'`` first, then the catalog's ``[[routes]]``;
  the first match gives a price (N ledger units per call) or a meter. Unlisted routes are
  forwarded free (``unpriced="free"``, the default, said at start-up) or refused with 404
  ``route_not_priced`` (``unpriced="refuse"``).

The money path of one call: hold → forward → settle when the answer was delivered whole with
a charged status (2xx/3xx by default), release on an upstream error (connect failure, timeout,
a broken stream, a status not charged) and when the client goes away before the end (a
stream of tokens is the exception: what was produced until then is charged). A client's
``Idempotency-Key`` names the hold: a retry of a charged call gets 409
``idempotency_key_used`` and is not forwarded again, a retry while it runs 409
``request_in_progress``, a retry of a call that was not charged goes through once.

Bodies and SSE streams pass through as they come (nothing is buffered but an LLM request's
JSON body, which the estimate needs, and a non-streamed LLM answer, which carries ``usage``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import Any

import anyio
import httpx

from tollkeep.catalog import Route, TokenPrice
from tollkeep.gateway.charging import Charger, Held
from tollkeep.gateway.llm import (
    LlmRequest,
    StreamMeter,
    ask_for_usage,
    estimate_tokens,
    llm_kind,
    parse_request,
    usage_of,
)
from tollkeep.gateway.proxy import RouteTable, Upstream, request_headers, response_headers
from tollkeep.keys import Principal
from tollkeep.kit.errors import InsufficientCredits, InvalidInput, NotFound, TollkeepError
from tollkeep.pricing import round_amount
from tollkeep.runtime import Tollkeep

__all__ = ["GatewayConfig", "HttpGateway"]

log = logging.getLogger("tollkeep.gateway.http")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

HEALTH_PATH = "/_tollkeep/health"


@dataclass(frozen=True)
class GatewayConfig:
    upstream: Upstream
    prices: tuple[Route, ...] = ()  # before the catalog's [[routes]]
    unpriced: str = "free"  # "free" | "refuse"
    llm_meter: str = "llm_tokens"
    default_max_tokens: int = 1024  # output tokens held when a request names no max
    increment_tokens: int = 256  # output tokens each extension of a stream's hold covers
    charge_statuses: frozenset[int] = frozenset({2, 3})  # status classes a priced route is charged on
    max_body_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 10.0
    read_timeout: float = 300.0  # between two reads of the upstream's answer
    hold_ttl_seconds: int = 900
    idempotency_prefix: str = "gw-http"
    extra: dict[str, Any] = field(default_factory=dict)


class _Reply(Exception):
    """Answer with this error (before the response started)."""

    def __init__(self, exc: TollkeepError) -> None:
        self.exc = exc


class _Disconnect:
    """Watches the client's side of the connection once its request body is read."""

    def __init__(self, receive: Receive) -> None:
        self.event = asyncio.Event()
        self._task = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                self.event.set()
                return

    @property
    def gone(self) -> bool:
        return self.event.is_set()

    def stop(self) -> None:
        self._task.cancel()


async def _race(coro: Awaitable[Any], gone: asyncio.Event) -> Any:
    """``coro``'s result, or None when the client goes away first (``coro`` is cancelled)."""
    task = asyncio.ensure_future(coro)
    waiter = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiter.cancel()
    if task.done():
        return task.result()
    task.cancel()
    await asyncio.wait({task})  # let it finish cancelling (its error, if any, is dropped)
    if not task.cancelled():
        task.exception()
    return None


def _json_body(status: int, body: dict[str, Any]) -> tuple[Message, Message]:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    retry = body.get("error", {}).get("retry_after")
    if isinstance(retry, int):
        headers.append((b"retry-after", str(retry).encode()))
    return (
        {"type": "http.response.start", "status": status, "headers": headers},
        {"type": "http.response.body", "body": data},
    )


class _Tokens:
    """A model's token prices on the LLM meter, and what a number of tokens costs."""

    def __init__(self, tp: TokenPrice, per: Decimal, rounding: str) -> None:
        self.tp, self.per, self.rounding = tp, per, rounding

    def cost(self, tin: int, tout: int) -> int:
        return round_amount(
            (Decimal(tin) * self.tp.input + Decimal(tout) * self.tp.output) / self.per, self.rounding
        )

    def covered(self, held: int, tin: int) -> int:
        """The most output tokens ``held`` covers after ``tin`` input tokens (-1: not even those)."""
        if self.tp.output == 0:
            return 1 << 62
        room = Decimal(held) * self.per - Decimal(tin) * self.tp.input
        if room < 0:
            return -1
        return int((room / self.tp.output).to_integral_value(rounding=ROUND_FLOOR))


class HttpGateway:
    """An ASGI app: the billing reverse proxy (see the module's docstring)."""

    def __init__(
        self,
        tk: Tollkeep,
        config: GatewayConfig,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        limit_writes: Callable[[str], None] | None = None,
    ) -> None:
        """``limit_writes``: the per-customer write limiter charged calls count against (the
        command passes ``TOLLKEEP_RATE_LIMIT_USAGE``'s; 429 ``rate_limited`` past it)."""
        self.tk = tk
        self.config = config
        self.charger = Charger(tk, hold_ttl=config.hold_ttl_seconds, limit_writes=limit_writes)
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._routes: tuple[str, RouteTable] | None = None

    # ---- set-up ------------------------------------------------------------------------------
    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            c = self.config
            self._client = httpx.AsyncClient(
                base_url=c.upstream.url,
                transport=self._transport,
                timeout=httpx.Timeout(c.read_timeout, connect=c.connect_timeout),
                limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
                follow_redirects=False,
            )
            for name in ("accept", "accept-encoding", "user-agent"):  # only what the caller sent
                del self._client.headers[name]
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def routes(self) -> RouteTable:
        """``--price`` routes, then the catalog's (rebuilt when the catalog changes)."""
        cat = self.tk.catalog
        cached = self._routes
        if cached is None or cached[0] != cat.version:
            table = RouteTable((*self.config.prices, *cat.routes), self.config.upstream.name)
            self._routes = cached = (cat.version, table)
        return cached[1]

    # ---- ASGI --------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = False

        async def tracked(msg: Message) -> None:
            nonlocal started
            if msg["type"] == "http.response.start":
                started = True
            await send(msg)

        try:
            await self._handle(scope, receive, tracked)
        except _Reply as r:
            if not started:
                await self._error(tracked, r.exc)
        except TollkeepError as exc:
            if not started:
                await self._error(tracked, exc)
        except Exception:
            log.exception("gateway error on %s %s", scope.get("method"), scope.get("path"))
            if not started:
                start, body = _json_body(
                    500,
                    {"error": {"code": "internal_error", "message": "internal error; it has been logged"}},
                )
                await tracked(start)
                await tracked(body)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _error(self, send: Send, exc: TollkeepError) -> None:
        start, body = _json_body(exc.status, self.charger.topup(exc).to_dict())
        await send(start)
        await send(body)

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        method: str = scope["method"]
        path: str = scope["path"]
        if path == HEALTH_PATH:
            start, body = _json_body(200, {"status": "ok", "upstream": self.config.upstream.url})
            await send(start)
            await send(body)
            return
        headers = dict((k.lower(), v) for k, v in scope["headers"])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.config.max_body_bytes):
            raise TollkeepError(
                f"the request body is limited to {self.config.max_body_bytes} bytes",
                code="body_too_large",
                status=413,
            )
        client = scope.get("client")
        p = await self.charger.principal(headers, client[0] if client else None)
        idem = headers.get(b"idempotency-key")
        idem_key = idem.decode("latin-1") if idem else None
        if idem_key is not None and not 1 <= len(idem_key) <= 200:
            raise InvalidInput("Idempotency-Key takes 1-200 characters", code="invalid_idempotency_key")
        kind = llm_kind(method, path)
        if kind is not None:
            # admission: the one gate (scope, rate and per-key limits) before anything is held
            permit = await self.charger.admit(p, f"{method} {path}", 1)
            try:
                await self._llm(scope, receive, send, p, kind, idem_key)
            finally:  # the call's slot in flight, once the stream is over
                with anyio.CancelScope(shield=True):
                    await self.charger.finish(permit)
            return
        route = self.routes().match(method, path)
        if route is None and self.config.unpriced == "refuse":
            raise NotFound(f"{method} {path} is not a priced route of this gateway", code="route_not_priced")
        if route is not None and route.feature:
            await self.charger.entitled(p, route.feature)
        charged = route is not None and (route.meter is not None or bool(route.price))
        # admission: the one gate (scope, rate and per-key limits) before anything is held
        permit = await self.charger.admit(
            p, f"{method} {path}", (route.price or 1) if charged and route else 0
        )
        try:
            await self._plain(scope, receive, send, p, route if charged else None, idem_key)
        finally:
            with anyio.CancelScope(shield=True):
                await self.charger.finish(permit)

    # ---- holds and idempotency ----------------------------------------------------------------
    async def _hold(self, p: Principal, idem_key: str | None, **kw: Any) -> tuple[Held, str]:
        return await self.charger.call_hold(p, self.config.idempotency_prefix, idem_key, **kw)

    # ---- priced (or free) routes ---------------------------------------------------------------
    async def _plain(
        self, scope: Scope, receive: Receive, send: Send, p: Principal, route: Route | None, idem: str | None
    ) -> None:
        held: Held | None = None
        if route is not None:
            # the request is part of the hold's payload: an Idempotency-Key reused for another
            # request is a 409 idempotency_conflict
            props = {"request": f"{scope['method']} {scope['path']}"[:200], "route": route.path}
            if route.meter is not None:
                held, _ = await self._hold(p, idem, meter=route.meter, properties=props)
            else:
                held, _ = await self._hold(p, idem, amount=route.price, properties=props)
        try:
            delivered, status = await self._forward(scope, receive, send)
        except BaseException:
            if held is not None:
                await self.charger.release(p, held)
            raise
        if held is None:
            return
        if delivered and status // 100 in self.config.charge_statuses:
            await self.charger.settle_parts(p, [held], held.amount, None)
        else:
            await self.charger.release(p, held)

    def _upstream_request(
        self, scope: Scope, content: Any, *, drop_length: bool = False, llm: bool = False
    ) -> httpx.Request:
        hdrs = request_headers(scope["headers"], self.config.upstream.headers, drop_length=drop_length)
        if llm:  # the gateway reads the answer's usage: ask for it uncompressed
            hdrs = [(k, v) for k, v in hdrs if k != b"accept-encoding"]
            hdrs.append((b"accept-encoding", b"identity"))
        url = scope["raw_path"].decode("latin-1") if scope.get("raw_path") else scope["path"]
        qs = scope.get("query_string") or b""
        target = url + ("?" + qs.decode("latin-1") if qs else "")
        return self.client.build_request(scope["method"], target, headers=hdrs, content=content)

    async def _body_stream(self, receive: Receive) -> AsyncIterator[bytes]:
        seen = 0
        while True:
            msg = await receive()
            if msg["type"] == "http.disconnect":
                raise _ClientGone()
            chunk = msg.get("body", b"")
            seen += len(chunk)
            if seen > self.config.max_body_bytes:
                raise _Reply(
                    TollkeepError(
                        f"the request body is limited to {self.config.max_body_bytes} bytes",
                        code="body_too_large",
                        status=413,
                    )
                )
            if chunk:
                yield chunk
            if not msg.get("more_body", False):
                return

    async def _send_upstream(self, req: httpx.Request) -> httpx.Response:
        try:
            return await self.client.send(req, stream=True)
        except httpx.TimeoutException:
            raise _Reply(
                TollkeepError("the upstream did not answer in time", code="upstream_timeout", status=504)
            ) from None
        except httpx.HTTPError as exc:
            if isinstance(exc.__context__, _Reply):
                raise exc.__context__ from None
            raise _Reply(
                TollkeepError(
                    f"the upstream is unreachable ({type(exc).__name__})",
                    code="upstream_unavailable",
                    status=502,
                )
            ) from None

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> tuple[bool, int]:
        """Forward the request and stream the answer back. (delivered whole, upstream status)."""
        headers = scope["headers"]
        has_body = any(k.lower() in (b"content-length", b"transfer-encoding") for k, _ in headers)
        content = self._body_stream(receive) if has_body else None
        try:
            resp = await self._send_upstream(self._upstream_request(scope, content))
        except _ClientGone:
            return False, 499
        watch = _Disconnect(receive)
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": resp.status_code,
                    "headers": response_headers(resp.headers.raw),
                }
            )
            try:
                async for chunk in resp.aiter_raw():
                    if watch.gone:
                        return False, resp.status_code
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.HTTPError:
                log.warning("upstream broke off %s %s", scope["method"], scope["path"])
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return False, 502
            if watch.gone:
                return False, resp.status_code
            # (once the response is complete, uvicorn answers receive() with http.disconnect:
            # the watcher's verdict counts only until here)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return True, resp.status_code
        finally:
            watch.stop()
            await resp.aclose()

    # ---- LLM endpoints ------------------------------------------------------------------------
    def _tokens(self, model: str | None) -> _Tokens:
        cat = self.tk.catalog
        meter = cat.meter(self.config.llm_meter)
        price = meter.price
        if price is None or price.model != "tokens":
            raise InvalidInput(f"meter {meter.key!r} is not priced by tokens", code="invalid_llm_meter")
        tp = price.models.get(model) if model is not None else None
        if tp is None:
            if price.default is None:
                known = ", ".join(sorted(price.models)) or "none"
                raise InvalidInput(
                    f"no price for model {model!r} (known models: {known})",
                    code="unknown_model",
                    details={"model": model},
                )
            tp = price.default
        return _Tokens(tp, price.per, cat.credits.rounding)

    async def _read_body(self, receive: Receive) -> bytes:
        parts = [chunk async for chunk in self._body_stream(receive)]
        return b"".join(parts)

    async def _llm(
        self, scope: Scope, receive: Receive, send: Send, p: Principal, kind: str, idem: str | None
    ) -> None:
        try:
            raw = await self._read_body(receive)
        except _ClientGone:
            return
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise InvalidInput(
                "the request body is not valid JSON", code="invalid_json", status=400
            ) from None
        if not isinstance(body, dict):
            raise InvalidInput("the request body must be a JSON object", code="invalid_json", status=400)
        req = parse_request(kind, body)
        prices = self._tokens(req.model)
        digest_of = raw
        if ask_for_usage(kind, body):
            raw = json.dumps(body).encode()
        est_out = req.max_tokens if req.max_tokens is not None else self.config.default_max_tokens
        if req.stream and req.max_tokens is None:
            est_out = min(est_out, self.config.increment_tokens)  # grown as the stream flows
        props = {
            "model": req.model,
            "input_tokens": req.input_tokens,
            "output_tokens": est_out,
            # the request is part of the hold's payload: an Idempotency-Key reused for another
            # request is a 409 idempotency_conflict
            "request": f"POST {scope['path']}"[:200],
            "body_sha256": hashlib.sha256(digest_of).hexdigest()[:32],
        }
        held, key = await self._hold(p, idem, meter=self.config.llm_meter, properties=props)
        holds = [held]
        try:
            out = await self._llm_forward(scope, receive, send, p, req, raw, prices, holds, key)
        except BaseException:
            for h in holds:
                await self.charger.release(p, h)
            raise
        if out is None:
            for h in holds:
                await self.charger.release(p, h)
            return
        tin, tout = out
        charge = prices.cost(tin, tout)
        actual = {"model": req.model, "input_tokens": tin, "output_tokens": tout}
        await self.charger.settle_parts(p, holds, charge, actual)

    async def _llm_forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        p: Principal,
        req: LlmRequest,
        raw: bytes,
        prices: _Tokens,
        holds: list[Held],
        key: str,
    ) -> tuple[int, int] | None:
        """Forward, stream back, extend the hold chain. (input, output) tokens to charge, or
        None: release everything."""
        watch = _Disconnect(receive)
        try:
            upstream = self._upstream_request(scope, raw, drop_length=True, llm=True)
            resp = await _race(self._send_upstream(upstream), watch.event)
            if resp is None:  # the client went away before the upstream answered
                return None
            try:
                status = resp.status_code
                ctype = resp.headers.get("content-type", "")
                start = {
                    "type": "http.response.start",
                    "status": status,
                    "headers": response_headers(resp.headers.raw),
                }
                if status // 100 != 2:
                    await send(start)
                    try:
                        async for chunk in resp.aiter_raw():
                            await send({"type": "http.response.body", "body": chunk, "more_body": True})
                    except httpx.HTTPError:
                        pass
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                    return None
                if not ctype.startswith("text/event-stream"):
                    try:
                        data = await _race(resp.aread(), watch.event)
                    except httpx.HTTPError:
                        raise _Reply(
                            TollkeepError(
                                "the upstream broke off its answer", code="upstream_unavailable", status=502
                            )
                        ) from None
                    if data is None:
                        return None
                    if watch.gone:
                        return None
                    await send(start)
                    await send({"type": "http.response.body", "body": data, "more_body": False})
                    usage = usage_of(data)
                    if usage is None:  # no usage: the estimate that was held
                        est = holds[0].amount
                        return (req.input_tokens, max(0, prices.covered(est, req.input_tokens)))
                    return usage.input_tokens, usage.output_tokens
                return await self._stream(send, watch, resp, start, p, req, prices, holds, key)
            finally:
                await resp.aclose()
        finally:
            watch.stop()

    async def _stream(
        self,
        send: Send,
        watch: _Disconnect,
        resp: httpx.Response,
        start: Message,
        p: Principal,
        req: LlmRequest,
        prices: _Tokens,
        holds: list[Held],
        key: str,
    ) -> tuple[int, int] | None:
        meter = StreamMeter(req.kind)
        held = sum(h.amount for h in holds)
        tin = req.input_tokens
        covered = prices.covered(held, tin)
        step = max(1, prices.cost(0, self.config.increment_tokens))
        await send(start)
        cut: TollkeepError | None = None
        delivered_chars = 0
        renew_at = time.monotonic() + self.charger.hold_ttl / 3
        try:
            async for chunk in resp.aiter_raw():
                if watch.gone:
                    break
                if time.monotonic() > renew_at:  # a stream longer than the holds' TTL
                    await self.charger.keep_open(p, holds)
                    renew_at = time.monotonic() + self.charger.hold_ttl / 3
                delivered_chars = meter.output_chars
                meter.feed(chunk)
                if meter.input_tokens is not None and meter.input_tokens != tin:
                    tin = meter.input_tokens
                    covered = prices.covered(held, tin)
                while meter.produced_tokens() > covered:
                    try:
                        more = await self.charger.hold(p, f"{key}:more:{len(holds)}", amount=step)
                    except InsufficientCredits as exc:
                        cut = exc
                        break
                    holds.append(more)
                    held += more.amount
                    covered = prices.covered(held, tin)
                if cut is not None:
                    break
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError:
            log.warning("upstream broke off a stream of %s", req.model)
            await send(
                {
                    "type": "http.response.body",
                    "body": _sse_error("upstream_error", "the upstream broke off the stream"),
                    "more_body": False,
                }
            )
            return None
        if cut is not None:
            # the tokens of the chunk that was not covered never reached the client: charge what
            # did (the estimator's count: the upstream's usage covers the whole answer)
            body = _sse_error("insufficient_credits", cut.message, topup=self.tk.topup_hint())
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return tin, min(max(covered, 0), estimate_tokens(delivered_chars))
        gone = watch.gone  # (after the last byte, uvicorn reports a disconnect: read it before)
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        if not gone and meter.reported:
            assert meter.input_tokens is not None and meter.output_tokens is not None
            return meter.input_tokens, meter.output_tokens
        return tin, meter.produced_tokens()


def _sse_error(code: str, message: str, **extra: Any) -> bytes:
    data = json.dumps({"type": "error", "error": {"code": code, "message": message, **extra}})
    return f"event: error\ndata: {data}\n\n".encode()


class _ClientGone(Exception):
    """The client went away while sending its request."""
