"""`tollkeep serve` as a real subprocess (issue #5, items 10, 13 and 15): no proxy headers trusted
unless configured, bounded header size and header time, no password in what it prints."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.conftest import ADMIN, make_settings
from tests.factories import free_port
from tollkeep.runtime import Tollkeep


@contextmanager
def server(
    db_url: str, tmp: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, list[str]]]:
    """`tollkeep serve` on a free port; yields its base URL and ``output``, a list that holds what
    the server printed once it has stopped."""
    output: list[str] = []
    port = free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLKEEP_")}
    full_env.update(
        {
            "TOLLKEEP_DATABASE_URL": db_url,
            "TOLLKEEP_ADMIN_TOKEN": ADMIN,
            "TOLLKEEP_PORT": str(port),
            "COLUMNS": "300",
        }
    )
    full_env.update(env or {})
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", "serve", "--log-level", "warning", *args],
        env=full_env,
        cwd=tmp,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            if proc.poll() is not None:
                raise AssertionError(f"server exited: {proc.stdout.read().decode() if proc.stdout else ''}")
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                threading.Event().wait(0.1)
        else:
            raise AssertionError("server did not start")
        yield base, output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            output.append(proc.stdout.read().decode())
            proc.stdout.close()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'serve.db'}"


def fenced_key(db_url: str) -> str:
    """A key usable only from 203.0.113.0/24."""
    with Tollkeep(make_settings(db_url)) as tk:
        cid = tk.customers.create("fenced")["id"]
        return str(tk.keys.create(cid, ip_allowlist=["203.0.113.0/24"])["key"])


# ---- 10: X-Forwarded-For is not believed unless the operator names the proxy ------------------------
def test_forwarded_for_from_loopback_does_not_pass_an_allowlist(sqlite_url: str, tmp_path: Path) -> None:
    key = fenced_key(sqlite_url)
    spoofed = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"}
    with server(sqlite_url, tmp_path) as (base, _):
        r = httpx.get(f"{base}/v1/balance", headers=spoofed)
        assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed", r.text


@pytest.mark.parametrize("how", ["setting", "option"])
def test_trusted_proxies_are_an_explicit_choice(sqlite_url: str, tmp_path: Path, how: str) -> None:
    key = fenced_key(sqlite_url)
    spoofed = {"Authorization": f"Bearer {key}", "X-Forwarded-For": "203.0.113.7"}
    args: tuple[str, ...] = ()
    env: dict[str, str] = {}
    if how == "setting":
        env["TOLLKEEP_FORWARDED_ALLOW_IPS"] = "127.0.0.1"
    else:
        args = ("--forwarded-allow-ips", "127.0.0.1")
    with server(sqlite_url, tmp_path, *args, env=env) as (base, _):
        assert httpx.get(f"{base}/v1/balance", headers=spoofed).status_code == 200
        r = httpx.get(f"{base}/v1/balance", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 403  # without the header the proxy itself is the client


# ---- 13: header size and header time are bounded ----------------------------------------------------
def raw_request(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def test_a_16_mb_header_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    with server(sqlite_url, tmp_path) as (base, _):
        # a bit over the limit: refused with a 431 and the JSON envelope
        with raw_request(base) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b'"code": "headers_too_large"' in answer
        # 16 MB: refused long before it is all sent
        sent = 0
        answer = b""
        with raw_request(base) as s:
            done = threading.Event()

            def send() -> None:
                nonlocal sent
                with suppress(OSError):
                    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
                    chunk = b"a" * 65536
                    for _ in range(256):
                        s.sendall(chunk)
                        sent += len(chunk)
                    s.sendall(b"\r\n\r\n")
                done.set()

            sender = threading.Thread(target=send)
            sender.start()
            with suppress(ConnectionResetError):
                answer = s.recv(65536)
            sender.join(timeout=60)
        assert not answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert answer == b"" or answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert sent < 16 * 1024 * 1024
        assert httpx.get(f"{base}/healthz").status_code == 200


def test_half_sent_requests_are_closed_and_block_nothing(sqlite_url: str, tmp_path: Path) -> None:
    env = {"TOLLKEEP_HEADER_TIMEOUT_SECONDS": "1"}
    with server(sqlite_url, tmp_path, env=env) as (base, _):
        slow = []
        try:
            for _ in range(300):
                s = raw_request(base)
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # and never the rest
                slow.append(s)
            # a real request is served meanwhile
            assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
            # and the server hangs up on every half-sent request (before the fix: never)
            for s in slow:
                try:
                    answer = s.recv(4096)
                except ConnectionResetError:
                    answer = b""
                assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:200]
        finally:
            for s in slow:
                s.close()
        # a connection that sends nothing at all is closed too
        with raw_request(base) as idle:
            assert idle.recv(4096) == b""
        assert httpx.get(f"{base}/healthz").status_code == 200


# ---- 15: the database password is never printed --------------------------------------------------
def test_serve_masks_the_database_password(pg_schema_url: str, tmp_path: Path) -> None:
    # the test server trusts every connection, so any password works: it must not be printed
    url = pg_schema_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2secret@")
    assert "hunter2secret" in url
    with server(url, tmp_path) as (_, output):
        pass
    printed = output[0]
    assert "database postgresql+psycopg://postgres:***@127.0.0.1" in printed, printed
    assert "hunter2secret" not in printed
