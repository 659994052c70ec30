"""Kill -9 the real server in the middle of a storm of debits: every debit it acknowledged
must be in the database afterwards, and the ledger must verify."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.conftest import ADMIN, make_settings
from tests.factories import free_port, kill_during_storm, start_server
from tollkeep.runtime import Tollkeep


def test_acknowledged_debits_survive_kill_9(db_url: str, tmp_path: Path) -> None:
    with Tollkeep(make_settings(db_url)) as tk:
        cid = tk.customers.create("durable")["id"]
        tk.ledger.grant(cid, 1_000_000, idempotency_key="big")
        key = tk.keys.create(cid)["key"]
    port = free_port()
    proc = start_server(db_url, port, tmp_path)
    acked: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(n: int) -> None:
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}
        ) as c:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    r = c.post(
                        "/v1/usage", json={"meter": "api_call", "idempotency_key": f"t{n}-{i}"}, timeout=5
                    )
                except httpx.HTTPError:
                    return
                if r.status_code == 200:
                    with lock:
                        acked.append(r.json()["event_id"])

    kill_during_storm(proc, hammer, workers=8, stop=stop, enough=lambda: len(acked) >= 300)
    assert len(acked) >= 300, "the server acknowledged too few debits to make the test meaningful"
    with Tollkeep(make_settings(db_url)) as tk:
        stored: set[str] = set()
        after = None
        while True:
            page = tk.usage(cid, limit=500, after=after)
            stored.update(e["event_id"] for e in page["data"])
            if not page["next"]:
                break
            after = page["next"]
        missing = set(acked) - stored
        assert not missing, f"{len(missing)} acknowledged debits lost"
        assert tk.balance(cid)["balance"] == 1_000_000 - len(stored)
        assert tk.verify().ok


def test_server_restarts_cleanly_after_kill(db_url: str, tmp_path: Path) -> None:
    port = free_port()
    for _ in range(2):
        proc = start_server(db_url, port, tmp_path)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    with Tollkeep(make_settings(db_url)) as tk:
        assert tk.verify().ok


def test_sighup_reloads_the_catalog(tmp_path: Path) -> None:
    from tollkeep.catalog import DEFAULT_CATALOG_TEXT

    catalog = tmp_path / "tollkeep.toml"
    catalog.write_text(DEFAULT_CATALOG_TEXT)
    port = free_port()
    env_db = f"sqlite:///{tmp_path / 'hup.db'}"
    os.environ["TOLLKEEP_CATALOG_PATH"] = str(catalog)
    try:
        proc = start_server(env_db, port, tmp_path, keep_catalog=True)
    finally:
        del os.environ["TOLLKEEP_CATALOG_PATH"]
    try:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        before = httpx.get(f"http://127.0.0.1:{port}/admin/catalog", headers=admin).json()["version"]
        catalog.write_text("not = = toml")
        proc.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{port}/admin/catalog", headers=admin).json()["version"] == before
        catalog.write_text(DEFAULT_CATALOG_TEXT.replace('version = "2026-01-01"', 'version = "2026-03-01"'))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        version = before
        while version == before and time.monotonic() < deadline:
            time.sleep(0.1)
            version = httpx.get(f"http://127.0.0.1:{port}/admin/catalog", headers=admin).json()["version"]
        assert version.startswith("2026-03-01")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_concurrent_http_charges_with_repeated_keys(db_url: str, tmp_path: Path) -> None:
    """Hundreds of concurrent POST /v1/usage against the real server, many sharing idempotency
    keys, against a small balance: exactly `balance` keys are charged, once each."""
    from concurrent.futures import ThreadPoolExecutor

    balance, calls, distinct = 40, 400, 100
    with Tollkeep(make_settings(db_url)) as tk:
        cid = tk.customers.create("crowd")["id"]
        tk.ledger.grant(cid, balance, idempotency_key="small")
        key = tk.keys.create(cid)["key"]
    port = free_port()
    proc = start_server(db_url, port, tmp_path)
    try:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
        with httpx.Client(
            base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {key}"}, limits=limits
        ) as c:

            def call(i: int) -> tuple[str, int, dict[str, object]]:
                k = f"job-{i % distinct}"
                r = c.post("/v1/usage", json={"meter": "api_call", "idempotency_key": k}, timeout=30)
                return k, r.status_code, r.json()

            with ThreadPoolExecutor(64) as pool:
                results = list(pool.map(call, range(calls)))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    statuses = {s for _, s, _ in results}
    assert statuses <= {200, 402}, statuses
    events: dict[str, set[object]] = {}
    for k, status, body in results:
        if status == 200:
            events.setdefault(k, set()).add(body["event_id"])
        else:
            assert body["error"]["code"] == "insufficient_credits"  # type: ignore[index]
    assert len(events) == balance, f"{len(events)} keys charged for a balance of {balance}"
    assert all(len(ids) == 1 for ids in events.values()), "a key was charged twice"
    with Tollkeep(make_settings(db_url)) as tk:
        assert tk.balance(cid)["balance"] == 0
        assert len(tk.usage(cid, limit=500)["data"]) == balance
        assert tk.verify().ok
