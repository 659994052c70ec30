"""Shared test factories: customers over HTTP, a real ``tollkeep serve`` subprocess, the CLI.
Tests import helpers from here, never from another test module."""

from __future__ import annotations

import json
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
from typing import Any

import httpx
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tests.conftest import ADMIN, make_settings
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.cli.main import app as cli_app
from tollkeep.kit.clock import Clock
from tollkeep.runtime import Tollkeep

__all__ = [
    "FlakyNetwork",
    "admin_http",
    "anonymous_catalog",
    "cli",
    "eventually",
    "free_port",
    "kill_during_storm",
    "new_customer",
    "new_server_key",
    "second_runtime",
    "served",
    "start_server",
]

_runner = CliRunner()
# the source tree these tests belong to: a server subprocess imports it (not whatever copy of
# tollkeep the interpreter has installed), also when the test run's PYTHONPATH is relative
SRC = Path(__file__).resolve().parents[1] / "src"


def new_customer(client: TestClient | httpx.Client, ext: str = "cust-1", credits: int = 0) -> tuple[str, str]:
    """A customer with an API key (and ``credits`` purchased) through the admin API: (id, key).
    ``client`` speaks to an app in-process or to a real server (:func:`admin_http`)."""
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


def start_server(
    db_url: str,
    port: int,
    tmp: Path,
    *,
    keep_catalog: bool = False,
    catalog: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """The real server (``python -m tollkeep serve``) on ``port``, once ``/healthz`` answers.
    ``catalog``: the catalog file it serves; ``env``: more (or other) TOLLKEEP_* settings."""
    extra = env or {}
    env = {
        **os.environ,
        "TOLLKEEP_DATABASE_URL": db_url,
        "TOLLKEEP_ADMIN_TOKEN": ADMIN,
        "TOLLKEEP_PORT": str(port),
        # these tests storm one customer on purpose: the per-customer write limit would answer 429
        "TOLLKEEP_RATE_LIMIT_USAGE": "off",
        "PYTHONPATH": os.pathsep.join(
            [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        ),
    }
    if not keep_catalog:
        env.pop("TOLLKEEP_CATALOG_PATH", None)
    if catalog is not None:
        env["TOLLKEEP_CATALOG_PATH"] = str(catalog)
    env.update(extra)
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


@contextmanager
def served(
    db_url: str, tmp: Path, *, catalog: Path | None = None, env: dict[str, str] | None = None
) -> Iterator[str]:
    """A real server on a free port for the block: yields its base URL; on leaving, checks
    ``GET /admin/ledger/verify`` (the journal explains every balance) and stops the server."""
    port = free_port()
    proc = start_server(db_url, port, tmp, catalog=catalog, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        yield base
        with admin_http(base) as admin:
            r = admin.get("/admin/ledger/verify")
            assert r.status_code == 200 and r.json()["ok"], r.text
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def admin_http(base_url: str) -> httpx.Client:
    """An httpx client of a real server's admin API."""
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30)


def new_server_key(base_url: str, name: str = "backend") -> tuple[str | None, str]:
    """(a server key ``tk_sk_…``, "") from ``POST /admin/server-keys`` when the server serves
    server keys on ``/v1`` too, else (None, why not): server keys are issue #7 item 1, landing
    in parts. Tests of server-key calls skip with that reason until they are there."""
    with admin_http(base_url) as admin:
        r = admin.post("/admin/server-keys", json={"name": name})
    if r.status_code == 404:
        return None, "the server has no server keys yet (POST /admin/server-keys is 404; issue #7 item 1)"
    assert r.status_code == 201, r.text
    key = str(r.json()["key"])
    assert key.startswith("tk_sk_"), key
    # a /v1 route that knows server keys answers for the customer named (here: none such, 404);
    # one that does not yet refuses the key itself (401)
    probe = httpx.get(
        f"{base_url}/v1/balance",
        params={"customer_id": "cus_probe"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    if probe.status_code == 401:
        code = probe.json()["error"]["code"]
        return None, (
            f"the server issues server keys but its /v1 routes do not accept them yet "
            f"(GET /v1/balance?customer_id= answered 401 {code}; issue #7 item 1)"
        )
    return key, ""


class FlakyNetwork:
    """A fake network in front of a real server, for httpx's ``MockTransport``: each request
    takes the next step of ``plan`` (then ``"ok"``):

    * ``"connect"``: fails to connect (the server never sees it);
    * ``"lost"``: reaches the server, which acts on it, but its answer is lost (a read timeout);
    * ``"503"`` / ``"502"``: a proxy answers that status without asking the server;
    * ``"429:N"``: ``rate_limited`` with ``Retry-After: N``, without asking the server;
    * ``"ok"``: passes through.

    ``bodies`` is the JSON body of every request sent (None for a body-less one), in order.
    ``transport()`` / ``async_transport()`` give the MockTransport for Client / AsyncClient."""

    def __init__(self, *plan: str) -> None:
        self.plan = list(plan)
        self.bodies: list[Any] = []

    def _step(self, request: httpx.Request) -> tuple[str, httpx.Response | None]:
        self.bodies.append(json.loads(request.content) if request.content else None)
        step = self.plan.pop(0) if self.plan else "ok"
        if step == "connect":
            raise httpx.ConnectError("connection refused (fake)", request=request)
        if step in ("502", "503"):
            return step, httpx.Response(int(step), text="<html>bad gateway</html>")
        if step.startswith("429:"):
            wait = step.split(":", 1)[1]
            body = {"error": {"code": "rate_limited", "message": "slow down", "retry_after": int(wait)}}
            return step, httpx.Response(429, json=body, headers={"Retry-After": wait})
        return step, None

    @staticmethod
    def _copy(resp: httpx.Response, content: bytes) -> httpx.Response:
        headers = {k: v for k, v in resp.headers.items() if k not in ("content-length", "content-encoding")}
        return httpx.Response(resp.status_code, headers=headers, content=content)

    def _handle(self, request: httpx.Request) -> httpx.Response:
        step, fake = self._step(request)
        if fake is not None:
            return fake
        with httpx.HTTPTransport() as real:
            resp = real.handle_request(request)
            content = resp.read()
        if step == "lost":
            raise httpx.ReadTimeout("the answer was lost (fake)", request=request)
        return self._copy(resp, content)

    async def _ahandle(self, request: httpx.Request) -> httpx.Response:
        step, fake = self._step(request)
        if fake is not None:
            return fake
        async with httpx.AsyncHTTPTransport() as real:
            resp = await real.handle_async_request(request)
            content = await resp.aread()
        if step == "lost":
            raise httpx.ReadTimeout("the answer was lost (fake)", request=request)
        return self._copy(resp, content)

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._handle)

    def async_transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self._ahandle)


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
