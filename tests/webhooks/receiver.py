"""Helpers of the webhooks tests: a real HTTP receiver on 127.0.0.1 (a ThreadingHTTPServer in a
thread) that records what it is sent and answers what it is told to, and ``pump`` (the two
jobs, once)."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook

from tollkeep.runtime import Tollkeep

__all__ = ["Received", "Receiver", "pump"]


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)

    def verify(self, secret: str) -> Any:
        """What a seller's receiver does: standardwebhooks checks signature and timestamp."""
        return Webhook(secret).verify(self.body, self.headers)


class _Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default (5) refuses connections under concurrent sends


class Receiver:
    """Answers each POST with the next status of ``plan`` (then ``default``), after ``delay``."""

    def __init__(self) -> None:
        self.got: list[Received] = []
        self.plan: list[int] = []
        self.default = 200
        self.delay = 0.0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver.got.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    status = receiver.plan.pop(0) if receiver.plan else receiver.default
                if receiver.delay:
                    time.sleep(receiver.delay)
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def of_type(self, topic: str) -> list[Received]:
        return [r for r in list(self.got) if r.json()["type"] == topic]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def pump(tk: Tollkeep) -> dict[str, int]:
    """What the two jobs do, once: outbox events become deliveries, due deliveries are sent."""
    tk.outbox.dispatch()
    return tk.webhooks.deliver()
