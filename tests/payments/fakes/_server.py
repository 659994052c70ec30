"""A JSON API served on 127.0.0.1 from a thread (the base of the provider fakes), and a webhook
delivery as a provider sends it (body, headers), deliverable to a running tollkeep server."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx


@dataclass(frozen=True)
class Delivery:
    """One webhook request exactly as the provider sends it."""

    body: bytes
    headers: dict[str, str]
    payload: dict[str, Any] = field(default_factory=dict)

    def deliver(self, url: str, *, timeout: float = 10.0) -> httpx.Response:
        """POST it to ``url`` (e.g. ``http://127.0.0.1:8080/webhooks/btcpay`` of a running server)."""
        return httpx.post(url, content=self.body, headers=self.headers, timeout=timeout)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


class Reply(Exception):  # a control-flow signal: answer this
    def __init__(self, status: int, body: Any) -> None:
        self.status, self.body = status, body


class FakeServer:
    """Subclasses implement :meth:`handle`. Switches: ``fail_status`` (every request answers it),
    ``delay`` (seconds before answering: a client with a shorter timeout times out)."""

    def __init__(self) -> None:
        self.fail_status: int | None = None
        self.delay: float = 0.0
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def handle(self, req: Request) -> tuple[int, Any]:
        raise NotImplementedError

    # ---- lifecycle ------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._httpd is not None, "the fake is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> FakeServer:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self) -> None:
                split = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                req = Request(
                    self.command,
                    split.path,
                    parse_qs(split.query),
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                )
                with fake.lock:
                    fake.requests.append(req)
                    fail, delay = fake.fail_status, fake.delay
                if delay and fake._stopping.wait(delay):
                    return
                if fail is not None:
                    status, out = fail, {"code": "fake-failure", "message": f"failing with {fail}"}
                else:
                    try:
                        with fake.lock:
                            status, out = fake.handle(req)
                    except Reply as r:
                        status, out = r.status, r.body
                data = json.dumps(out).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:  # the client gave up (timed out)
                    pass

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, name=type(self).__name__
        )
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None
