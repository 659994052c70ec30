"""A real ``tollkeep serve`` process with its jobs running: admin actions reach a real receiver
as verified Standard Webhooks messages, a 500 is retried with the same webhook-id, and the
endpoint is managed over HTTP and from the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.factories import admin_http, cli, eventually, served
from tests.webhooks.receiver import Receiver

FAST = {
    "TOLLKEEP_WEBHOOKS_ALLOW_PRIVATE": "true",
    "TOLLKEEP_WEBHOOKS_INTERVAL_SECONDS": "0.05",
    "TOLLKEEP_OUTBOX_INTERVAL_SECONDS": "0.05",
    "TOLLKEEP_WEBHOOKS_RETRY_SECONDS": "[0.2, 0.2]",
}


def test_events_from_a_served_runtime_reach_the_receiver_signed(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'served.db'}"
    with served(url, tmp_path, env=FAST) as base, admin_http(base) as admin:
        r = admin.post("/admin/webhook-endpoints", json={"url": receiver.url + "/in", "events": None})
        assert r.status_code == 201, r.text
        ep = r.json()
        secret = ep["secret"]
        cid = admin.post("/admin/customers", json={"external_id": "zoe"}).json()["id"]
        key = admin.post(f"/admin/customers/{cid}/keys").json()
        assert admin.post(f"/admin/keys/{key['id']}/revoke").status_code == 200
        assert admin.post(f"/admin/customers/{cid}/plan", json={"plan": "pro"}).status_code == 200
        first = ["customer.created", "key.created", "key.revoked", "plan.changed"]
        assert eventually(lambda: sorted(x.json()["type"] for x in receiver.got) == sorted(first), timeout=15)
        receiver.plan = [500]  # the next one fails once, then is retried
        r = admin.post(
            f"/admin/customers/{cid}/grants",
            json={"amount": 3, "source": "purchase", "expires_at": None, "idempotency_key": "g"},
        )
        assert r.status_code == 201, r.text
        wanted = ["customer.created", "key.created", "key.revoked", "plan.changed", "credits.granted"]
        assert eventually(lambda: {x.json()["type"] for x in receiver.got} >= set(wanted), timeout=15)
        assert eventually(lambda: len(receiver.got) == 6, timeout=15)  # and the retry
        by_type: dict[str, list[str]] = {}
        for got in receiver.got:
            message = got.verify(secret)
            assert message["data"]["customer_id"] == cid
            by_type.setdefault(message["type"], []).append(got.id)
        assert {t: len(ids) for t, ids in by_type.items()} == {
            "customer.created": 1,
            "key.created": 1,
            "key.revoked": 1,
            "plan.changed": 1,
            "credits.granted": 2,  # the 500 and its retry, one webhook-id
        }
        assert len(set(by_type["credits.granted"])) == 1
        page = admin.get(f"/admin/webhook-endpoints/{ep['id']}/deliveries").json()
        granted = page["data"][0]
        assert granted["type"] == "credits.granted"
        assert granted["status"] == "delivered" and granted["attempts"] == 2
        log = admin.get(f"/admin/webhook-deliveries/{granted['id']}").json()["attempt_log"]
        assert [(a["ok"], a["response_status"]) for a in log] == [(False, 500), (True, 200)]
        assert admin.post(f"/admin/webhook-endpoints/{ep['id']}/test").json()["status"] == "delivered"
        assert receiver.got[-1].verify(secret)["type"] == "webhook.test"
        assert admin.delete(f"/admin/webhook-endpoints/{ep['id']}").status_code == 204


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TOLLKEEP_DATABASE_URL", f"sqlite:///{tmp_path / 'cli.db'}")
    monkeypatch.setenv("TOLLKEEP_WEBHOOKS_ALLOW_PRIVATE", "true")
    monkeypatch.delenv("TOLLKEEP_CATALOG_PATH", raising=False)
    return tmp_path


def test_the_cli_manages_endpoints_and_deliveries(workdir: Path, receiver: Receiver) -> None:
    cli("migrate")
    out = cli("webhooks", "add", receiver.url, "--event", "customer.created", "--event", "credits.*")
    assert "whsec_" in out
    secret = next(w for w in out.split() if w.startswith("whsec_"))
    (ep,) = json.loads(cli("webhooks", "list", "--json"))["data"]
    assert ep["events"] == ["customer.created", "credits.*"] and "secret" not in ep
    assert secret not in cli("webhooks", "show", ep["id"])
    test = json.loads(cli("webhooks", "test", ep["id"], "--json"))
    assert test["status"] == "delivered" and receiver.got[-1].verify(secret)["type"] == "webhook.test"
    (d,) = json.loads(cli("webhooks", "deliveries", ep["id"], "--json"))["data"]
    assert "webhook.test" in cli("webhooks", "deliveries", ep["id"])
    again = json.loads(cli("webhooks", "redeliver", d["id"], "--json"))
    assert again["attempts"] == 2 and receiver.got[-1].id == receiver.got[0].id
    assert "disabled" in cli("webhooks", "disable", ep["id"])
    assert "enabled" in cli("webhooks", "enable", ep["id"])
    rotated = cli("webhooks", "rotate-secret", ep["id"])
    new = next(w for w in rotated.split() if w.startswith("whsec_"))
    assert new != secret
    audit = cli("audit", "--limit", "500", "--json")
    assert "webhook_endpoint.rotate_secret" in audit and secret not in audit and new not in audit
    cli("webhooks", "remove", ep["id"])
    assert json.loads(cli("webhooks", "list", "--json"))["data"] == []
