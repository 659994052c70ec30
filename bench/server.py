"""The real server (``tollkeep serve``) as a subprocess, and the admin calls the benchmark needs."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx
from sqlalchemy import text

from tollkeep.kit.db import Database

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tollkeep_env(database_url: str, admin_token: str) -> dict[str, str]:
    """The caller's environment without any TOLLKEEP_* settings, plus the benchmark's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLKEEP_")}
    env["TOLLKEEP_DATABASE_URL"] = database_url
    env["TOLLKEEP_ADMIN_TOKEN"] = admin_token
    # the benchmark drives one customer at thousands of writes a second: no per-customer limit
    env["TOLLKEEP_RATE_LIMIT_USAGE"] = "off"
    return env


class Server:
    """``tollkeep serve --port P --log-level warning`` in its own process (single process, uvicorn)."""

    def __init__(self, database_url: str, admin_token: str, workdir: Path, log_name: str) -> None:
        self.database_url = database_url
        self.admin_token = admin_token
        self.workdir = workdir  # cwd: keeps the repo's .env / tollkeep.toml out of the run
        self.log_path = workdir / log_name
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.port = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 90.0) -> float:
        """Start and wait for /healthz; returns the seconds it took."""
        self.port = free_port()
        self._log = self.log_path.open("ab")
        t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "tollkeep"), "serve", "--port", str(self.port), "--log-level", "warning"],
            cwd=self.workdir,
            env=tollkeep_env(self.database_url, self.admin_token),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                if httpx.get(f"{self.base}/healthz", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill9()
        raise RuntimeError(f"server did not answer /healthz within {timeout}s; see {self.log_path}")

    def kill9(self) -> None:
        """SIGKILL: no shutdown hook, no final commit, no checkpoint."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self._close_log()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # ---- admin API -----------------------------------------------------------------------------
    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.base, headers={"Authorization": f"Bearer {self.admin_token}"}, timeout=30.0
        )

    def new_customer(self, label: str, credits: int = 10**12) -> tuple[str, str]:
        """A customer with an API key and a big purchase grant; returns (customer id, key)."""
        with self.admin() as c:
            r = c.post("/admin/customers", json={"external_id": f"bench-{label}-{secrets.token_hex(4)}"})
            r.raise_for_status()
            cid = r.json()["id"]
            r = c.post(f"/admin/customers/{cid}/keys")
            r.raise_for_status()
            key = r.json()["key"]
            r = c.post(
                f"/admin/customers/{cid}/grants",
                json={"amount": credits, "source": "purchase", "idempotency_key": f"bench-{label}"},
            )
            r.raise_for_status()
        return cid, key

    def count_usage_via_api(self, customer_id: str) -> int:
        """Pages through GET /admin/customers/{id}/usage."""
        n = 0
        after: str | None = None
        with self.admin() as c:
            while True:
                params: dict[str, Any] = {"limit": 500}
                if after:
                    params["after"] = after
                r = c.get(f"/admin/customers/{customer_id}/usage", params=params)
                r.raise_for_status()
                body = r.json()
                n += len(body["data"])
                after = body["next"]
                if not body["has_more"] or not after:
                    return n


def count_usage_via_sql(database_url: str, customer_id: str) -> int:
    db = Database(database_url)
    try:
        with db.engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM operations WHERE customer_id = :c AND kind = 'usage'"),
                    {"c": customer_id},
                ).scalar_one()
            )
    finally:
        db.dispose()


def ledger_verify(database_url: str, workdir: Path) -> dict[str, Any]:
    """``tollkeep ledger verify`` against the database, as an operator would run it."""
    t0 = time.perf_counter()
    p = subprocess.run(
        [str(VENV_BIN / "tollkeep"), "ledger", "verify"],
        cwd=workdir,
        env=tollkeep_env(database_url, "unused") | {"COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = [ln for ln in (p.stdout + p.stderr).splitlines() if ln.strip()]
    return {"exit_code": p.returncode, "seconds": round(time.perf_counter() - t0, 2), "output": lines[-6:]}
