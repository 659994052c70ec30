"""Shared test factories: customers over HTTP, a real ``tollkeep serve`` subprocess, the CLI.
Tests import helpers from here, never from another test module."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import ADMIN, make_settings
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.cli.main import app as cli_app
from tollkeep.kit.clock import Clock
from tollkeep.runtime import Tollkeep

__all__ = [
    "anonymous_catalog",
    "cli",
    "eventually",
    "free_port",
    "kill_during_storm",
    "new_customer",
    "second_runtime",
    "start_server",
]

_runner = CliRunner()


def new_customer(client: TestClient, ext: str = "cust-1", credits: int = 0) -> tuple[str, str]:
    """A customer with an API key (and ``credits`` purchased) through the admin API: (id, key)."""
    r = client.post("/admin/customers", json={"external_id": ext, "email": f"{ext}@example.com"})
    assert r.status_code == 201, r.text
    cid = r.json()["id"]
    r = client.post(f"/admin/customers/{cid}/keys")
    assert r.status_code == 201, r.text
    key = r.json()["key"]
    if credits:
        r = client.post(
            f"/admin/customers/{cid}/grants",
            json={"amount": credits, "source": "purchase", "expires_at": None, "idempotency_key": f"g-{ext}"},
        )
        assert r.status_code == 201, r.text
    return cid, key


ANON_OFF = "[anonymous]\nallowance = 0\n"


def anonymous_catalog(tmp_path: Path, allowance: int = 10) -> Path:
    """The default catalog with the anonymous allowance turned on (it is off by default)."""
    assert ANON_OFF in DEFAULT_CATALOG_TEXT
    path = tmp_path / "anon.toml"
    path.write_text(DEFAULT_CATALOG_TEXT.replace(ANON_OFF, f"[anonymous]\nallowance = {allowance}\n"))
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db_url: str, port: int, tmp: Path, *, keep_catalog: bool = False) -> subprocess.Popen[bytes]:
    """The real server (``python -m tollkeep serve``) on ``port``, once ``/healthz`` answers."""
    env = {
        **os.environ,
        "TOLLKEEP_DATABASE_URL": db_url,
        "TOLLKEEP_ADMIN_TOKEN": ADMIN,
        "TOLLKEEP_PORT": str(port),
        # these tests storm one customer on purpose: the per-customer write limit would answer 429
        "TOLLKEEP_RATE_LIMIT_USAGE": "off",
    }
    if not keep_catalog:
        env.pop("TOLLKEEP_CATALOG_PATH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", "serve", "--log-level", "warning"],
        env=env,
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start")


def cli(*args: str) -> str:
    """Run a ``tollkeep`` command in-process; it must succeed. Returns its output."""
    res = _runner.invoke(cli_app, list(args), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res.output


def kill_during_storm(
    proc: subprocess.Popen[bytes],
    hammer: Callable[[int], None],
    *,
    workers: int,
    stop: threading.Event,
    enough: Callable[[], bool],
    seconds: float = 20,
) -> None:
    """Run ``hammer(n)`` in ``workers`` threads against the server, ``kill -9`` it once
    ``enough()`` (or after ``seconds``), then stop and join the threads."""
    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(workers)]
    for t in threads:
        t.start()
    try:
        deadline = time.monotonic() + seconds
        while not enough() and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
        if proc.poll() is None:
            proc.kill()


def eventually(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())


@contextmanager
def second_runtime(db_url: str, clock: Clock, **settings: object) -> Iterator[Tollkeep]:
    """Another runtime on the same database (its own pool, writer lanes and workers), as a second
    server or worker process would have."""
    rt = Tollkeep(make_settings(db_url, **settings), clock=clock)
    try:
        yield rt
    finally:
        rt.close()
