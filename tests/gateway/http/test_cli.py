"""`tollkeep gateway http` as a user runs it: a real process on a migrated database, in front
of the fake upstream; it says where it listens, the priced routes and how to call it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.factories import SRC, free_port
from tests.gateway.http.conftest import balance, customer
from tollkeep.runtime import Tollkeep


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gateway_http_command(gtk: Tollkeep, upstream: str, db_url: str) -> None:
    cid, key = customer(gtk, credits=10)
    port = free_port()
    env = {
        **os.environ,
        "TOLLKEEP_DATABASE_URL": db_url,
        "TOLLKEEP_CATALOG_PATH": str(gtk.settings.catalog_path),
        "TOLLKEEP_RUN_WORKERS": "false",
        "COLUMNS": "200",
        "PYTHONPATH": os.pathsep.join(
            [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        ),
    }
    args = ["gateway", "http", "--upstream", upstream, "--port", str(port), "--price", "GET /items/{id}=4"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/_tollkeep/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.1)
        r = httpx.get(f"{base}/items/7", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["id"] == "7"
        assert balance(gtk, cid) == 6  # the --price wins over the catalog's 3
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert f"tollkeep HTTP gateway on {base}" in output
    assert "GET    /items/{id}  4 credit" in output
    assert "GET    /items/{id}  3 credit" in output  # the catalog's, listed after
    assert "LLM endpoints" in output and "test-model" in output
    assert "tollkeep keys create" in output and "curl" in output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_gateway_http_refuses_bad_prices(gtk: Tollkeep, db_url: str) -> None:
    env = {**os.environ, "TOLLKEEP_DATABASE_URL": db_url, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "tollkeep",
            "gateway",
            "http",
            "--upstream",
            "http://x",
            "--price",
            "GET items=two",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "METHOD /path/pattern=CREDITS" in out.stderr
