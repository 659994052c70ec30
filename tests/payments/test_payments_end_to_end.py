"""Payments through a real ``tollkeep serve``: the local provider's whole purchase loop, GitHub's
real ``marketplace_purchase`` deliveries (forged, replayed, concurrent duplicates), and a server
killed with SIGKILL between storing and processing. Afterwards each payment took effect once and
the ledger verifies (``served`` checks it on the way out)."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.factories import admin_http, eventually, free_port, served, start_server
from tests.payments.fakes.github_payloads import ACCOUNT_ID, cancelled, purchased, signed
from tollkeep.catalog import DEFAULT_CATALOG_TEXT

SECRET = "gh-webhook-secret"
CATALOG = (
    DEFAULT_CATALOG_TEXT
    + """
[plans.basic]
name = "Basic"
prices = { usd = 1000 }
github_plan_id = 435
suspend_keys_on_cancel = true
[plans.basic.allowance]
amount = 5000
period = "month"
"""
)


def _catalog(tmp_path: Path) -> Path:
    path = tmp_path / "tollkeep.toml"
    path.write_text(CATALOG)
    return path


def test_the_local_provider_sells_a_pack_and_shows_the_key_once(db_url: str, tmp_path: Path) -> None:
    with served(db_url, tmp_path, env={"TOLLKEEP_INBOX_INTERVAL_SECONDS": "0.1"}) as base:
        pricing = httpx.get(f"{base}/v1/pricing").json()
        starter = next(p for p in pricing["packs"] if p["key"] == "starter")
        assert starter["credits"] == 1000 and starter["prices"]["usd"] == 500
        r = httpx.post(f"{base}/v1/checkout", json={"pack": "starter", "email": "ada@example.com"})
        assert r.status_code == 201, r.text
        chk = r.json()
        assert chk["provider"] == "local" and chk["url"].endswith(f"/pay/local/{chk['id']}")
        # before paying: no key
        before = httpx.get(f"{base}/v1/checkout/{chk['id']}", params={"claim": chk["claim_token"]}).json()
        assert before["status"] == "open" and before["api_key"] is None
        paid = httpx.get(chk["url"], follow_redirects=False)
        assert paid.status_code == 303 and "tollkeep_claim=" in paid.headers["location"]

        def claimed() -> dict | None:
            v = httpx.get(f"{base}/v1/checkout/{chk['id']}", params={"claim": chk["claim_token"]}).json()
            return v if v["status"] == "paid" else None

        assert eventually(claimed, timeout=10)
        # the first paid fetch above minted the key; fetch again through a fresh claim-less view
        views = [claimed() for _ in range(2)]
        assert all(v is not None and v["api_key"] is None and v["claimed"] for v in views)
        with admin_http(base) as admin:
            funnel = admin.get("/admin/funnel").json()
            assert funnel["stages"]["acquisition"] >= 1 and funnel["stages"]["paid"] == 1
            # the pay page of a checkout paid once pays nothing more
            httpx.get(chk["url"], follow_redirects=False)
            assert eventually(
                lambda: admin.get("/admin/inbox", params={"status": "pending"}).json()["data"] == []
            )
            pays = admin.get("/admin/payments").json()["data"]
            assert [(p["customer_id"], p["credits"]) for p in pays] == [(chk["customer_id"], 1000)]


def test_the_key_is_shown_exactly_once_and_works(db_url: str, tmp_path: Path) -> None:
    with served(db_url, tmp_path, env={"TOLLKEEP_INBOX_INTERVAL_SECONDS": "0.1"}) as base:
        chk = httpx.post(f"{base}/v1/checkout", json={"pack": "starter", "email": "bo@example.com"}).json()
        with admin_http(base) as admin:
            httpx.get(chk["url"], follow_redirects=False)
            assert eventually(lambda: admin.get("/admin/payments").json()["data"], timeout=10)
        url = f"{base}/v1/checkout/{chk['id']}"
        with ThreadPoolExecutor(8) as pool:
            views = list(
                pool.map(lambda _: httpx.get(url, params={"claim": chk["claim_token"]}).json(), range(8))
            )
        keys = [v["api_key"] for v in views if v["api_key"]]
        assert len(keys) == 1, views
        bal = httpx.get(f"{base}/v1/balance", headers={"Authorization": f"Bearer {keys[0]}"}).json()
        assert bal["balance"] == 1000
        # spending past the balance: a 402 that says how to top up
        r = httpx.post(
            f"{base}/v1/usage",
            headers={"Authorization": f"Bearer {keys[0]}"},
            json={"meter": "api_call", "quantity": 1001, "idempotency_key": "big"},
        )
        assert r.status_code == 402
        topup = r.json()["error"]["topup"]
        assert topup["url"].endswith("/v1/checkout") and any(p["key"] == "starter" for p in topup["packs"])
        # a wrong claim token learns nothing
        assert httpx.get(url, params={"claim": "tkc_wrong"}).status_code == 404


def test_github_purchases_forged_replayed_and_concurrent_take_effect_once(
    db_url: str, tmp_path: Path
) -> None:
    env = {"TOLLKEEP_GITHUB_WEBHOOK_SECRET": SECRET, "TOLLKEEP_INBOX_INTERVAL_SECONDS": "0.1"}
    with served(db_url, tmp_path, catalog=_catalog(tmp_path), env=env) as base:
        hook = f"{base}/webhooks/github"
        forged = signed(purchased(account_id=1), "not-the-secret")
        r = forged.deliver(hook)
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_signature"
        d = signed(purchased(account_id=7), SECRET)
        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(lambda _: d.deliver(hook).status_code, range(16)))
        assert codes == [200] * 16
        # GitHub redelivers with a NEW delivery id: the payment id still makes it one effect
        again = signed(purchased(account_id=7), SECRET)
        assert again.deliver(hook).status_code == 200
        with admin_http(base) as admin:

            def done() -> bool:
                rows = admin.get("/admin/inbox", params={"provider": "github"}).json()["data"]
                return len(rows) == 2 and all(r["status"] == "processed" for r in rows)

            assert eventually(done, timeout=10)
            custs = admin.get("/admin/customers", params={"q": "github:7"}).json()["data"]
            assert len(custs) == 1 and custs[0]["plan"] == "basic"
            pays = admin.get("/admin/payments", params={"provider": "github"}).json()["data"]
            assert len(pays) == 1
            # a cancellation effective in the past ends the plan now (and suspends keys: the plan says so)
            assert signed(cancelled(account_id=7), SECRET).deliver(hook).status_code == 200
            assert eventually(
                lambda: admin.get(f"/admin/customers/{custs[0]['id']}").json()["plan"] is None, timeout=10
            )


def test_a_server_killed_between_storing_and_processing_applies_each_event_once(
    db_url: str, tmp_path: Path
) -> None:
    catalog = _catalog(tmp_path)
    env = {"TOLLKEEP_GITHUB_WEBHOOK_SECRET": SECRET, "TOLLKEEP_INBOX_INTERVAL_SECONDS": "0.05"}
    port = free_port()
    proc = start_server(db_url, port, tmp_path, catalog=catalog, env=env)
    base = f"http://127.0.0.1:{port}"
    deliveries = [signed(purchased(account_id=1000 + i), SECRET) for i in range(40)]
    try:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda d: d.deliver(f"{base}/webhooks/github"), deliveries))
    finally:
        proc.send_signal(signal.SIGKILL)  # mid-processing: some applied, some claimed, some pending
        proc.wait()
    with served(db_url, tmp_path, catalog=catalog, env=env) as base2:
        for d in deliveries[:10]:  # and the relay delivers some of them again after the restart
            assert d.deliver(f"{base2}/webhooks/github").status_code == 200
        with admin_http(base2) as admin:

            def all_processed() -> bool:
                rows = admin.get("/admin/inbox", params={"provider": "github", "limit": 100}).json()["data"]
                return len(rows) == 40 and all(r["status"] == "processed" for r in rows)

            assert eventually(all_processed, timeout=90)
            pays = admin.get("/admin/payments", params={"provider": "github", "limit": 100}).json()["data"]
            assert len(pays) == 40 and len({p["customer_id"] for p in pays}) == 40
    assert ACCOUNT_ID  # the documented example account is the default of the other tests
