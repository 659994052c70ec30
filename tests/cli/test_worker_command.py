"""`tollkeep worker`: `--once` runs each registered job once and prints what it did, `--job`
picks jobs, `--list` names them; without `--once` it runs until SIGTERM and then stops promptly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories import cli
from tollkeep.cli.main import app
from tollkeep.config import Settings
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def expired_hold_and_grant(workdir: Path) -> tuple[str, str]:
    """A hold and a promo grant made two days ago, both long past their end by now."""
    past = FrozenClock(datetime.now(UTC) - timedelta(days=2))
    with Tollkeep(Settings(database_url=f"sqlite:///{workdir / 'tollkeep.db'}"), clock=past) as tk:
        cid = str(tk.customers.create("old")["id"])
        tk.ledger.grant(cid, 10, idempotency_key="buy")
        tk.ledger.grant(
            cid,
            5,
            source="promo",
            idempotency_key="promo",
            priority=100,
            expires_at=past.now() + timedelta(hours=1),
        )
        hold = tk.ledger.create_hold(cid, idempotency_key="h", amount=4, ttl_seconds=60)
    return cid, str(hold["id"])


def test_once_runs_every_job_and_prints_what_each_did(workdir: Path) -> None:
    expired_hold_and_grant(workdir)
    done = json.loads(cli("worker", "--once", "--json"))
    assert done["ledger.sweep"] == {"holds_released": 1, "grants_expired": 1}
    assert done["plans.renew_allowances"] == 0
    # customer.created and the two grants' events
    assert done["outbox.dispatch"] == {"delivered": 3, "failed": 0}
    again = cli("worker", "--once")
    assert "ledger.sweep" in again and '"holds_released": 0' in again
    assert "ledger OK" in cli("ledger", "verify")


def test_job_picks_the_jobs_to_run(workdir: Path) -> None:
    expired_hold_and_grant(workdir)
    done = json.loads(cli("worker", "--once", "--job", "outbox.dispatch", "--json"))
    assert done == {"outbox.dispatch": {"delivered": 3, "failed": 0}}
    res = CliRunner().invoke(app, ["worker", "--once", "--job", "no.such.job"])
    assert res.exit_code == 2 and "no job named 'no.such.job'" in res.output


def test_the_worker_needs_a_migrated_database(workdir: Path) -> None:
    res = CliRunner().invoke(app, ["worker", "--once"])
    assert res.exit_code == 2 and "tollkeep init" in res.output, res.output
    assert not (workdir / "tollkeep.db").exists()


def test_list_names_the_registered_jobs(workdir: Path) -> None:
    cli("migrate")
    listed = json.loads(cli("worker", "--list", "--json"))
    assert [j["name"] for j in listed] == [
        "ledger.sweep",
        "plans.renew_allowances",
        "outbox.dispatch",
        "payments.inbox",
        "payments.prune",
        "payments.expire_checkouts",
        "payments.meters",
        "funnel.catch_up",
        "webhooks.deliver",
        "subscriptions.renew",
    ]
    assert all(j["interval"] > 0 and j["description"] for j in listed)


def test_the_worker_runs_until_sigterm_and_stops_promptly(workdir: Path) -> None:
    cid, hold_id = expired_hold_and_grant(workdir)
    env = {**os.environ, "TOLLKEEP_SWEEPER_INTERVAL_SECONDS": "0.2"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).parents[2] / "src"), env.get("PYTHONPATH")) if p
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", "worker", "--log-level", "info"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        swept = False
        with Tollkeep(Settings(database_url=f"sqlite:///{workdir / 'tollkeep.db'}")) as tk:
            while time.monotonic() < deadline and not swept:  # only reading: the worker does the work
                swept = tk.hold(cid, hold_id)["status"] == "expired" and tk.outbox.pending() == 0
                time.sleep(0.1)
        assert swept, "the worker did not sweep"
        proc.send_signal(signal.SIGTERM)
        started = time.monotonic()
        output, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 3, "the worker took too long to stop"
        assert proc.returncode == 0, output
        assert "tollkeep worker:" in output and "stopping" in output
    finally:
        if proc.poll() is None:
            proc.kill()
