"""The inbox worker applies events in batches (one transaction per batch, each event in its own
savepoint): a poison event amid a batch fails alone, with its reason, and loses or doubles
nothing of the others; two worker processes on one PostgreSQL database never process one event
twice. (A server killed with SIGKILL mid-batch: test_payments_end_to_end.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories import SRC, eventually
from tests.payments.fakes.github_payloads import purchased, signed
from tests.payments.fakes.testpay import event, sign
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.payments.providers.github import GitHubMarketplace
from tollkeep.runtime import Tollkeep

SECRET = "gh-webhook-secret"
BASIC = """
[plans.basic]
name = "Basic"
prices = { usd = 1000 }
github_plan_id = 435
[plans.basic.allowance]
amount = 5000
period = "month"
"""


def _catalog(tmp_path: Path) -> Path:
    path = tmp_path / "tollkeep.toml"
    path.write_text(DEFAULT_CATALOG_TEXT + BASIC)
    return path


def test_a_poison_event_amid_a_batch_fails_alone(tk: Tollkeep, pay_client: TestClient) -> None:
    cids = [str(tk.customers.create(f"b{i}")["id"]) for i in range(4)]
    stored = []
    for n in range(40):
        # every 10th names a pack the catalog lacks: it fails inside its unit of work, after the
        # events before it in the same batch ran
        pack = "mega" if n % 10 == 5 else "starter"
        body = event(f"evt_b{n}", "paid", customer=cids[n % 4], pack=pack, payment=f"pi_b{n}")
        r = pay_client.post("/webhooks/testpay", content=body, headers=sign(body))
        assert r.status_code == 200
        stored.append(r.json()["id"])
    batches = tk.executor.batches
    counts = tk.inbox.process(limit=100)
    assert counts == {"processed": 36, "failed": 4}, counts
    assert tk.executor.batches - batches < 36  # applied in batches, not one transaction each
    failed = pay_client.get("/admin/inbox", params={"status": "failed", "limit": 100}).json()["data"]
    assert sorted(r["event_id"] for r in failed) == [f"evt_b{n}" for n in (15, 25, 35, 5)]
    assert all("unknown pack 'mega'" in r["error"] for r in failed)
    pays = pay_client.get("/admin/payments", params={"limit": 100}).json()["data"]
    assert len(pays) == 36 and len({p["payment_id"] for p in pays}) == 36
    assert sum(tk.balance(c)["balance"] for c in cids) == 36 * 1000
    # processing again (a redelivery, a second worker) changes nothing
    for body_id in ("evt_b0", "evt_b1"):
        body = event(body_id, "paid", customer=cids[0], pack="starter", payment="pi_b0")
        pay_client.post("/webhooks/testpay", content=body, headers=sign(body))
    assert tk.inbox.process() == {}
    assert sum(tk.balance(c)["balance"] for c in cids) == 36 * 1000


def test_two_worker_processes_never_process_one_event_twice(
    db_url: str, tk: Tollkeep, tmp_path: Path
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("several worker processes on one database: PostgreSQL (SQLite has one writer)")
    catalog = _catalog(tmp_path)
    tk.catalogs._path = catalog
    tk.reload_catalog()
    tk.providers.register(GitHubMarketplace(SECRET))
    n = 120
    for i in range(n):
        d = signed(purchased(account_id=50_000 + i), SECRET)
        assert not tk.inbox.receive("github", d.body, d.headers)["duplicate"]
    env = {
        **os.environ,
        "TOLLKEEP_DATABASE_URL": db_url,
        "TOLLKEEP_CATALOG_PATH": str(catalog),
        "TOLLKEEP_GITHUB_WEBHOOK_SECRET": SECRET,
        "TOLLKEEP_INBOX_INTERVAL_SECONDS": "0.02",
        "PYTHONPATH": os.pathsep.join(
            [str(SRC), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        ),
    }
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tollkeep", "worker", "--job", "payments.inbox"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:

        def done() -> bool:
            rows = tk.payments.list_events(provider="github", limit=1000)["data"]
            return len(rows) == n and all(r["status"] == "processed" for r in rows)

        assert eventually(done, timeout=120)
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)
    rows = tk.payments.list_events(provider="github", limit=1000)["data"]
    assert {r["attempts"] for r in rows} == {1}  # each claimed once, by one of the two
    pays = tk.payments.list_payments(provider="github", limit=1000)["data"]
    assert len(pays) == n and len({p["customer_id"] for p in pays}) == n
