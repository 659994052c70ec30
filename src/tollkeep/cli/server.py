"""How ``tollkeep serve`` runs uvicorn: the TCP peer is the client address unless proxies are
trusted explicitly, and a client gets a bounded size and time to send a request's headers.

uvicorn (httptools) neither bounds the size of a request's headers nor the time a client takes
to send them: a 16 MB header was read whole, and connections that send half a request and wait
were kept forever until the process ran out of file descriptors. :class:`GuardedHttpTools`
adds both limits to uvicorn's httptools protocol:

* the request line and headers may hold ``max_header_bytes`` (431 and the connection closed
  beyond, counted as the bytes arrive, so a huge header is never buffered whole);
* once a connection opens, or a new request starts on a kept-alive one, the client has
  ``header_timeout`` seconds to finish the headers (408 and the connection closed after).

The number of connections served at once is uvicorn's ``limit_concurrency`` (503 above).
For public exposure, run behind a reverse proxy all the same (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tollkeep.config import Settings

__all__ = ["GuardedHttpTools", "guarded_protocol", "uvicorn_options"]

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}


class GuardedHttpTools(HttpToolsProtocol):
    max_header_bytes = 16_384
    header_timeout = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_pending = True  # between requests, or inside a request line + headers
        self._head_raw = 0  # bytes received while the current head is incomplete
        self._head_exact = 0  # bytes of the current head, as parsed
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # ---- connection ------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._head_pending:
            self._head_raw += len(data)
            if self._head_timer is None:
                self._arm_head_timer()
        super().data_received(data)
        if self._head_pending and self._head_raw > self.max_header_bytes and not self._refused:
            self._refuse(431, "request headers are too large")

    def send_400_response(self, msg: str) -> None:
        if not self._refused:  # we already answered and closed
            super().send_400_response(msg)

    # ---- parser callbacks ------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_pending = True
        self._head_exact = 0

    def on_url(self, url: bytes) -> None:
        self._head_exact += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_exact += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_pending = False
        self._head_raw = 0
        self._cancel_head_timer()
        if self._head_exact > self.max_header_bytes:
            self._refuse(431, "request headers are too large")
            # stop the parser: uvicorn turns this into a 400, which send_400_response drops
            raise ValueError("request headers too large")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_pending = True
        self._head_raw = 0

    # ---- helpers ---------------------------------------------------------------------------------
    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        if self.header_timeout > 0:
            self._head_timer = self.loop.call_later(self.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self._head_pending or self.transport is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            self._arm_head_timer()  # a response is still being made: look again later
            return
        if self._head_raw:
            self._refuse(408, "the request headers took too long")
        else:
            self.transport.close()  # an idle connection: nothing to answer

    def _refuse(self, status: int, message: str) -> None:
        self._refused = True
        self._cancel_head_timer()
        code = "headers_too_large" if status == 431 else "request_timeout"
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n" % (status, _REASONS[status], len(body))
        )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + body)
            self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpTools]:
    """The protocol class with this server's limits."""

    class TollkeepHttp(GuardedHttpTools):
        max_header_bytes = settings.max_header_bytes
        header_timeout = settings.header_timeout_seconds

    return TollkeepHttp


def uvicorn_options(settings: Settings, forwarded_allow_ips: str | None = None) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run`` from the settings (and ``--forwarded-allow-ips``)."""
    trusted = forwarded_allow_ips if forwarded_allow_ips is not None else settings.forwarded_allow_ips
    trusted = (trusted or "").strip()
    return {
        "host": settings.host,
        "port": settings.port,
        "http": guarded_protocol(settings),
        # X-Forwarded-For is believed only from proxies the operator names: otherwise any local
        # hop could claim an allowlisted address (uvicorn trusts 127.0.0.1 by default)
        "proxy_headers": bool(trusted),
        "forwarded_allow_ips": trusted or "",
        "timeout_keep_alive": settings.keep_alive_seconds,
        "limit_concurrency": settings.max_connections if settings.max_connections > 0 else None,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "server_header": False,
    }
