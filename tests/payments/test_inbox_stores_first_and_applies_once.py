"""The inbox: verified webhooks are stored raw before anything acts on them, duplicates store
nothing, and every payment takes effect exactly once - under duplicate deliveries, replays,
concurrent workers and a worker that died holding its claim."""

from __future__ import annotations

import threading
from datetime import timedelta

from fastapi.testclient import TestClient

from tests.payments.fakes.testpay import FakePay, event, sign
from tollkeep.runtime import Tollkeep


def customer(tk: Tollkeep, ext: str = "buyer-1") -> str:
    return str(tk.customers.create(ext)["id"])


def deliver(c: TestClient, body: bytes, headers: dict[str, str] | None = None) -> dict:
    r = c.post("/webhooks/testpay", content=body, headers=headers or sign(body))
    assert r.status_code == 200, r.text
    return r.json()


def test_a_duplicate_delivery_is_stored_once_and_granted_once(tk: Tollkeep, pay_client: TestClient) -> None:
    cid = customer(tk)
    body = event("evt_1", "paid", customer=cid, pack="starter", payment="pi_1", amount=500)
    first = deliver(pay_client, body)
    again = deliver(pay_client, body)
    assert first["duplicate"] is False and again["duplicate"] is True and first["id"] == again["id"]
    # stored, not yet applied: the 2xx came before any business logic
    assert tk.balance(cid)["balance"] == 0
    rows = pay_client.get("/admin/inbox", params={"provider": "testpay"}).json()["data"]
    assert [(r["event_id"], r["status"]) for r in rows] == [("evt_1", "pending")]
    assert tk.inbox.process() == {"processed": 1}
    assert tk.balance(cid)["balance"] == 1000
    # a replay, another delivery with a new event id for the same payment, a second process run
    pay_client.post(f"/admin/inbox/{first['id']}/replay").raise_for_status()
    deliver(pay_client, event("evt_1b", "paid", customer=cid, pack="starter", payment="pi_1", amount=500))
    tk.inbox.process()
    tk.inbox.process()
    assert tk.balance(cid)["balance"] == 1000
    shown = pay_client.get(f"/admin/inbox/{first['id']}").json()
    assert shown["status"] == "processed" and shown["payload"]["id"] == "evt_1"
    assert shown["headers"] == {"x-testpay-sig": sign(body)["X-Testpay-Sig"]}
    pays = pay_client.get("/admin/payments", params={"customer_id": cid}).json()["data"]
    assert [(p["payment_id"], p["credits"], p["status"]) for p in pays] == [("pi_1", 1000, "succeeded")]


def test_forged_stale_oversized_and_unknown_deliveries_store_nothing(
    tk: Tollkeep, pay_client: TestClient
) -> None:
    cid = customer(tk)
    body = event("evt_f", "paid", customer=cid, pack="starter", payment="pi_f")
    forged = pay_client.post("/webhooks/testpay", content=body, headers={"X-Testpay-Sig": "00" * 32})
    assert forged.status_code == 401 and forged.json()["error"]["code"] == "invalid_signature"
    unsigned = pay_client.post("/webhooks/testpay", content=body)
    assert unsigned.status_code == 401
    tampered = pay_client.post(
        "/webhooks/testpay", content=body.replace(b"starter", b"builder"), headers=sign(body)
    )
    assert tampered.status_code == 401
    junk = b"not json"
    assert pay_client.post("/webhooks/testpay", content=junk, headers=sign(junk)).status_code == 400
    big = b"x" * (tk.settings.webhook_max_body_bytes + 1)
    r = pay_client.post("/webhooks/testpay", content=big, headers=sign(big))
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"
    r = pay_client.post("/webhooks/nosuch", content=body, headers=sign(body))
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_provider"
    r = pay_client.post("/webhooks/btcpay", content=body, headers=sign(body))
    assert r.status_code == 404 and r.json()["error"]["code"] == "provider_not_configured"
    assert pay_client.get("/admin/inbox").json()["data"] == []
    assert tk.inbox.process() == {}
    assert tk.balance(cid)["balance"] == 0


def test_unknown_types_are_stored_and_ignored(tk: Tollkeep, pay_client: TestClient) -> None:
    body = event("evt_u", "customer.tax_id.created")
    assert deliver(pay_client, body)["duplicate"] is False
    (row,) = pay_client.get("/admin/inbox", params={"status": "ignored"}).json()["data"]
    assert row["type"] == "customer.tax_id.created" and row["processed_at"] is not None
    assert tk.inbox.process() == {}


def test_an_unknown_pack_fails_with_the_reason_and_is_replayable(
    tk: Tollkeep, pay_client: TestClient
) -> None:
    cid = customer(tk)
    body = event("evt_p", "paid", customer=cid, pack="mega", payment="pi_p")
    inbox_id = deliver(pay_client, body)["id"]
    tk.inbox.process()
    (row,) = pay_client.get("/admin/inbox", params={"status": "failed"}).json()["data"]
    assert row["id"] == inbox_id and "unknown pack 'mega'" in row["error"] and row["attempts"] == 1
    assert tk.balance(cid)["balance"] == 0
    # the operator adds the pack to the catalog, then replays
    from tests.payments.catalogs import with_pack

    with_pack(tk, "mega", 5000)
    pay_client.post(f"/admin/inbox/{inbox_id}/replay").raise_for_status()
    tk.inbox.process()
    assert pay_client.get(f"/admin/inbox/{inbox_id}").json()["status"] == "processed"
    assert tk.balance(cid)["balance"] == 5000


def test_a_provider_outage_retries_with_backoff_then_fails_visibly(
    tk: Tollkeep, pay_client: TestClient, testpay: FakePay, clock
) -> None:
    cid = customer(tk)
    inbox_id = deliver(pay_client, event("evt_o", "paid", customer=cid, pack="starter", payment="pi_o"))["id"]
    testpay.down = True
    waits = []
    for _ in range(tk.inbox.settings.max_attempts):
        tk.inbox.process()
        row = pay_client.get(f"/admin/inbox/{inbox_id}").json()
        if row["status"] == "failed":
            break
        assert row["status"] == "pending" and "down" in row["error"]
        assert tk.inbox.process() == {}  # not due before its back-off
        waits.append(row["next_attempt_at"])
        clock.advance(timedelta(hours=2))
    assert row["status"] == "failed" and row["attempts"] == tk.inbox.settings.max_attempts
    assert len(set(waits)) == len(waits)
    testpay.down = False
    pay_client.post(f"/admin/inbox/{inbox_id}/replay").raise_for_status()
    tk.inbox.process()
    assert tk.balance(cid)["balance"] == 1000


def test_concurrent_workers_apply_each_payment_once(tk: Tollkeep, pay_client: TestClient) -> None:
    cids = [customer(tk, f"c{i}") for i in range(5)]
    for n in range(60):
        cid = cids[n % 5]
        body = event(f"evt_{n}", "paid", customer=cid, pack="starter", payment=f"pi_{n % 30}")
        deliver(pay_client, body)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                tk.inbox.process(limit=7)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    statuses = {r["status"] for r in pay_client.get("/admin/inbox", params={"limit": 100}).json()["data"]}
    assert statuses == {"processed"}
    # 30 payments of 1000 credits: pi_k went to customer k % 5 (both deliveries of it agree)
    assert sum(tk.balance(c)["balance"] for c in cids) == 30 * 1000
    assert len(pay_client.get("/admin/payments", params={"limit": 100}).json()["data"]) == 30


def test_a_worker_killed_holding_its_claim_gives_the_event_back(
    tk: Tollkeep, pay_client: TestClient, clock
) -> None:
    cid = customer(tk)
    inbox_id = deliver(pay_client, event("evt_k", "paid", customer=cid, pack="starter", payment="pi_k"))["id"]
    from tollkeep.payments import repository as repo

    now = clock.now()
    dead = f"{tk.inbox.claimant.split(':')[0]}:999999999:dead"  # no such process
    tk.executor.call(lambda s: repo.claim_events(s, now, now + timedelta(hours=1), 10, dead))
    # its lease runs an hour, but this host has no such process: it is due again at once
    counts = tk.inbox.process()
    assert counts == {"processed": 1}, counts
    assert pay_client.get(f"/admin/inbox/{inbox_id}").json()["attempts"] == 2
    assert tk.balance(cid)["balance"] == 1000
