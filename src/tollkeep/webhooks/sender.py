"""Sending: sign each delivery (Standard Webhooks) and POST it to the address the SSRF guard
checked, several at once, outside any transaction.

Redirects are not followed (a 3xx is a failed attempt); a response body is read up to 64 KiB
and dropped; 2xx is success, anything else, a timeout or a connection error is a failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from tollkeep import __version__
from tollkeep.webhooks.guard import Resolver, Target, resolve_target

__all__ = ["Outcome", "Sender", "sign"]

MAX_RESPONSE_BYTES = 65_536
USER_AGENT = f"tollkeep-webhooks/{__version__}"


@dataclass(frozen=True)
class Outcome:
    delivery_id: str
    endpoint_id: str
    attempt: int
    ok: bool
    response_status: int | None
    latency_ms: int | None
    error: str | None


def sign(event_id: str, when: datetime, body: str, secrets: Sequence[str]) -> dict[str, str]:
    """The Standard Webhooks headers: one ``v1,<base64>`` signature per secret (two while a
    rotated secret is still honoured), space-separated."""
    signatures = " ".join(Webhook(secret).sign(event_id, when, body) for secret in secrets)
    return {
        "webhook-id": event_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": signatures,
    }


class Sender:
    def __init__(self, *, concurrency: int, timeout: float, allow_private: bool, resolver: Resolver) -> None:
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.allow_private = allow_private
        self.resolver = resolver
        self._pool: ThreadPoolExecutor | None = None
        # one client per TLS server name: a kept-alive connection to an address is only reused
        # for the host its certificate was checked for (None: plain http)
        self._clients: dict[str | None, httpx.Client] = {}
        self._lock = threading.Lock()

    def _client(self, sni: str | None) -> httpx.Client:
        with self._lock:
            client = self._clients.get(sni)
            if client is None:
                if len(self._clients) > 256:
                    for old in self._clients.values():
                        old.close()
                    self._clients.clear()
                client = httpx.Client(
                    timeout=self.timeout,
                    follow_redirects=False,
                    trust_env=False,  # no proxy from the environment: the guard checked the address
                    limits=httpx.Limits(
                        max_connections=self.concurrency * 2, max_keepalive_connections=self.concurrency
                    ),
                )
                self._clients[sni] = client
            return client

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="tollkeep-webhook")
            return self._pool

    def send_all(self, rows: Sequence[Any], now: datetime) -> list[Outcome]:
        """Send claimed deliveries (``repository.claim`` rows), ``concurrency`` at a time. Each
        URL is resolved and checked once per batch, right before its sends."""
        if not rows:
            return []
        pool = self._executor()
        urls = list(dict.fromkeys(r.endpoint.url for r in rows))
        targets = dict(
            zip(
                urls,
                pool.map(
                    lambda u: resolve_target(u, allow_private=self.allow_private, resolver=self.resolver),
                    urls,
                ),
                strict=True,
            )
        )
        return list(pool.map(lambda r: self._send(r, targets[r.endpoint.url], now), rows))

    def _send(self, row: Any, target: Target, now: datetime) -> Outcome:
        def outcome(ok: bool, status: int | None, latency: int | None, error: str | None) -> Outcome:
            return Outcome(row.id, row.endpoint_id, row.attempt, ok, status, latency, error)

        if target.refused is not None:
            return outcome(False, None, None, target.refused[:500])
        ep = row.endpoint
        secrets = [ep.secret]
        if ep.previous_secret and ep.previous_secret_until is not None and ep.previous_secret_until > now:
            secrets.append(ep.previous_secret)
        # the signature's timestamp is the wall clock: receivers compare it with theirs
        headers = sign(row.event_id, datetime.now(UTC), row.body, secrets)
        headers.update({"content-type": "application/json", "user-agent": USER_AGENT, "host": target.host})
        extensions = {"sni_hostname": target.sni} if target.sni else None
        started = time.perf_counter()
        try:
            with self._client(target.sni).stream(
                "POST", target.url, content=row.body.encode(), headers=headers, extensions=extensions
            ) as resp:
                read = 0
                for chunk in resp.iter_raw():
                    read += len(chunk)
                    if read > MAX_RESPONSE_BYTES:
                        break
                status = resp.status_code
        except httpx.TimeoutException:
            latency = int((time.perf_counter() - started) * 1000)
            return outcome(False, None, latency, f"timeout after {self.timeout:g} s")
        except Exception as exc:  # a refused connection, a reset, a bad answer: a failed attempt
            latency = int((time.perf_counter() - started) * 1000)
            return outcome(False, None, latency, f"{type(exc).__name__}: {exc}"[:500])
        latency = int((time.perf_counter() - started) * 1000)
        if 200 <= status < 300:
            return outcome(True, status, latency, None)
        return outcome(False, status, latency, f"HTTP {status}")

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            clients, self._clients = list(self._clients.values()), {}
        if pool is not None:
            pool.shutdown(wait=True)
        for client in clients:
            client.close()
