"""The admin surface: the SSRF guard at registration (and at send time, against DNS
rebinding), secrets shown once and never listed, shown or audited, bad input as 4xx JSON with a
stable code, deliveries newest first with a cursor."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import ADMIN, make_settings
from tests.webhooks.receiver import Receiver, pump
from tollkeep.app import create_app
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def client_for(tk: Tollkeep) -> TestClient:
    c = TestClient(create_app(runtime=tk))
    c.headers["Authorization"] = f"Bearer {ADMIN}"
    return c


@pytest.fixture
def guarded(tmp_path: Path, clock: FrozenClock) -> Iterator[tuple[Tollkeep, TestClient]]:
    """SQLite, with the default setting: private addresses refused."""
    tk = Tollkeep(make_settings(f"sqlite:///{tmp_path / 'g.db'}"), clock=clock)
    try:
        with client_for(tk) as c:
            yield tk, c
    finally:
        tk.close()


def code(r: Any) -> str:
    return str(r.json()["error"]["code"])


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",  # a name resolving to 127.0.0.1
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/",
        "http://192.168.1.20/",
        "http://100.64.0.1/",  # shared address space (carrier NAT)
        "http://0.0.0.0/",
        "http://[::ffff:127.0.0.1]/",  # IPv4 inside IPv6
        "http://2130706433/",  # 127.0.0.1 written as a number
        "http://224.0.0.1/",
        "ftp://example.com/hook",
        "file:///etc/passwd",
    ],
)
def test_private_and_odd_urls_are_refused(guarded: tuple[Tollkeep, TestClient], url: str) -> None:
    tk, c = guarded
    r = c.post("/admin/webhook-endpoints", json={"url": url})
    assert r.status_code == 422 and code(r) == "webhook_url_not_allowed", r.text
    assert tk.webhooks.list() == []


@pytest.mark.parametrize(
    "url",
    ["not a url", "http://", "https://user:secret@example.com/hook", "http://example.com/#frag", "//x/y"],
)
def test_malformed_urls_are_refused(guarded: tuple[Tollkeep, TestClient], url: str) -> None:
    r = guarded[1].post("/admin/webhook-endpoints", json={"url": url})
    assert r.status_code == 422 and code(r) in ("webhook_url_invalid", "webhook_url_not_allowed"), r.text


def test_public_addresses_and_unresolvable_names_are_accepted(guarded: tuple[Tollkeep, TestClient]) -> None:
    c = guarded[1]
    assert c.post("/admin/webhook-endpoints", json={"url": "https://93.184.216.34/hook"}).status_code == 201
    # not resolvable now: accepted, and resolved again before every send
    assert (
        c.post("/admin/webhook-endpoints", json={"url": "https://hooks.example.invalid/x"}).status_code == 201
    )


def test_loopback_is_allowed_with_the_setting(wclient: TestClient, receiver: Receiver) -> None:
    r = wclient.post(
        "/admin/webhook-endpoints", json={"url": receiver.url + "/h", "events": ["customer.created"]}
    )
    assert r.status_code == 201, r.text
    assert wclient.post("/admin/webhook-endpoints", json={"url": "http://localhost:1/"}).status_code == 201
    # multicast and unspecified addresses are never endpoints
    r = wclient.post("/admin/webhook-endpoints", json={"url": "http://0.0.0.0:1/"})
    assert r.status_code == 422 and code(r) == "webhook_url_not_allowed"


def test_a_name_that_rebinds_to_loopback_is_refused_at_send_time(
    guarded: tuple[Tollkeep, TestClient], receiver: Receiver
) -> None:
    tk, c = guarded
    port = receiver.url.rsplit(":", 1)[1]
    answers = {"hooks.example.com": ["93.184.216.34"]}

    def resolver(host: str, _port: int) -> list[str]:  # the DNS seam: what the name resolves to
        return answers[host]

    tk.webhooks.resolver = tk.webhooks.sender.resolver = resolver
    r = c.post("/admin/webhook-endpoints", json={"url": f"http://hooks.example.com:{port}/hook"})
    assert r.status_code == 201, r.text
    answers["hooks.example.com"] = ["93.184.216.34", "127.0.0.1"]  # rebinding after the check
    tk.customers.create("target")
    assert pump(tk)["retrying"] == 1
    (d,) = c.get(f"/admin/webhook-endpoints/{r.json()['id']}/deliveries").json()["data"]
    assert d["error"].startswith("webhook_url_not_allowed: 127.0.0.1 is a loopback address")
    assert d["response_status"] is None and receiver.got == []


def test_a_send_goes_to_the_checked_address_with_the_name_as_host(wtk: Tollkeep, receiver: Receiver) -> None:
    port = receiver.url.rsplit(":", 1)[1]

    def resolver(host: str, _port: int) -> list[str]:
        assert host == "hooks.example.com"
        return ["127.0.0.1"]

    wtk.webhooks.resolver = wtk.webhooks.sender.resolver = resolver
    ep = wtk.webhooks.create(f"http://hooks.example.com:{port}/in", actor=_admin())
    wtk.customers.create("pinned")
    assert pump(wtk)["delivered"] == 1
    (got,) = receiver.got
    assert got.headers["host"] == f"hooks.example.com:{port}" and got.path == "/in"
    got.verify(ep["secret"])


def _admin() -> Any:
    from tollkeep.kit.actor import Actor, Role

    return Actor("admin", "env", Role.ADMIN)


def test_the_secret_is_shown_once_and_never_listed_shown_or_audited(
    wclient: TestClient, receiver: Receiver
) -> None:
    r = wclient.post("/admin/webhook-endpoints", json={"url": receiver.url, "description": "crm"})
    assert r.status_code == 201
    ep = r.json()
    secrets = [ep["secret"]]
    assert set(ep) >= {"id", "secret", "url", "events", "status"} and ep["status"] == "enabled"
    r = wclient.post(f"/admin/webhook-endpoints/{ep['id']}/rotate-secret", json={"overlap_seconds": 60})
    assert r.status_code == 200 and r.json()["secret"] not in secrets
    secrets.append(r.json()["secret"])
    r = wclient.post(f"/admin/webhook-endpoints/{ep['id']}/rotate-secret")
    secrets.append(r.json()["secret"])
    wclient.patch(f"/admin/webhook-endpoints/{ep['id']}", json={"events": ["credits.*"], "description": "x"})
    wclient.post(f"/admin/webhook-endpoints/{ep['id']}/test")
    reads = [
        wclient.get("/admin/webhook-endpoints"),
        wclient.get(f"/admin/webhook-endpoints/{ep['id']}"),
        wclient.get(f"/admin/webhook-endpoints/{ep['id']}/deliveries"),
        wclient.get("/admin/audit", params={"limit": 500}),
    ]
    for read in reads:
        assert read.status_code == 200
        for secret in secrets:
            assert secret not in read.text and secret.removeprefix("whsec_") not in read.text
    assert "secret" not in reads[1].json() and "secret" not in reads[0].json()["data"][0]
    actions = [e["action"] for e in reads[3].json()["data"]]
    assert actions[:5] == [
        "webhook_endpoint.test",
        "webhook_endpoint.update",
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint.rotate_secret",
        "webhook_endpoint.create",
    ]


def test_bad_input_is_4xx_json_with_a_stable_code(wclient: TestClient, receiver: Receiver) -> None:
    ep = wclient.post("/admin/webhook-endpoints", json={"url": receiver.url}).json()
    cases = [
        (
            wclient.post("/admin/webhook-endpoints", json={"url": "gopher://x"}),
            422,
            "webhook_url_not_allowed",
        ),
        (wclient.post("/admin/webhook-endpoints", json={"url": "http://"}), 422, "webhook_url_invalid"),
        (wclient.post("/admin/webhook-endpoints", json={}), 422, "invalid_request"),
        (
            wclient.post("/admin/webhook-endpoints", json={"url": receiver.url, "events": "all"}),
            422,
            "invalid_request",
        ),
        (
            wclient.post("/admin/webhook-endpoints", json={"url": receiver.url, "events": ["nope"]}),
            422,
            "invalid_webhook_events",
        ),
        (
            wclient.post("/admin/webhook-endpoints", json={"url": receiver.url, "x": 1}),
            422,
            "invalid_request",
        ),
        (wclient.get("/admin/webhook-endpoints/whe_missing"), 404, "webhook_endpoint_not_found"),
        (wclient.patch("/admin/webhook-endpoints/whe_missing", json={}), 404, "webhook_endpoint_not_found"),
        (wclient.delete("/admin/webhook-endpoints/whe_missing"), 404, "webhook_endpoint_not_found"),
        (wclient.post("/admin/webhook-endpoints/whe_missing/test"), 404, "webhook_endpoint_not_found"),
        (
            wclient.post("/admin/webhook-endpoints/whe_missing/rotate-secret"),
            404,
            "webhook_endpoint_not_found",
        ),
        (wclient.get("/admin/webhook-endpoints/whe_missing/deliveries"), 404, "webhook_endpoint_not_found"),
        (wclient.get("/admin/webhook-deliveries/whd_missing"), 404, "webhook_delivery_not_found"),
        (wclient.post("/admin/webhook-deliveries/whd_missing/redeliver"), 404, "webhook_delivery_not_found"),
        (
            wclient.patch(f"/admin/webhook-endpoints/{ep['id']}", json={"status": "paused"}),
            422,
            "invalid_request",
        ),
        (wclient.patch(f"/admin/webhook-endpoints/{ep['id']}", json={"url": "http://10.0.0.1/"}), 201, ""),
        (
            wclient.patch(f"/admin/webhook-endpoints/{ep['id']}", json={"events": []}),
            422,
            "invalid_webhook_events",
        ),
        (
            wclient.post(f"/admin/webhook-endpoints/{ep['id']}/rotate-secret", json={"overlap_seconds": -1}),
            422,
            "invalid_request",
        ),
        (
            wclient.post("/admin/webhook-endpoints", headers={"Authorization": "Bearer nope"}, json={}),
            401,
            "",
        ),
    ]
    for r, status, expected in cases:
        if status == 201:  # loopback and private are allowed here (the setting is on)
            assert r.status_code == 200, r.text
            continue
        assert r.status_code == status, (r.request.method, r.request.url, r.text)
        assert isinstance(r.json()["error"]["code"], str)
        if expected:
            assert code(r) == expected, r.text
    wclient.patch(f"/admin/webhook-endpoints/{ep['id']}", json={"status": "disabled"})
    r = wclient.post(f"/admin/webhook-endpoints/{ep['id']}/test")
    assert r.status_code == 409 and code(r) == "webhook_endpoint_disabled"
    assert wclient.delete(f"/admin/webhook-endpoints/{ep['id']}").status_code == 204
    assert wclient.get(f"/admin/webhook-endpoints/{ep['id']}").status_code == 404


def test_deliveries_page_newest_first(wclient: TestClient, wtk: Tollkeep, receiver: Receiver) -> None:
    ep = wclient.post("/admin/webhook-endpoints", json={"url": receiver.url}).json()
    for i in range(5):
        wtk.customers.create(f"paged-{i}")
    pump(wtk)
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = wclient.get(f"/admin/webhook-endpoints/{ep['id']}/deliveries", params=params).json()
        seen += page["data"]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == 5 and [d["id"] for d in seen] == sorted((d["id"] for d in seen), reverse=True)
    names = [receiver.got[i].json()["data"]["external_id"] for i in range(5)]
    assert sorted(names) == [f"paged-{i}" for i in range(5)]
    assert set(seen[0]) >= {
        "id",
        "event_id",
        "type",
        "status",
        "attempts",
        "response_status",
        "latency_ms",
        "error",
        "created_at",
        "next_attempt_at",
        "delivered_at",
    }
    one = wclient.get(f"/admin/webhook-deliveries/{seen[0]['id']}").json()
    assert one["attempt_log"][0]["ok"] is True and one["attempt_log"][0]["response_status"] == 200
    r = wclient.post(f"/admin/webhook-deliveries/{seen[0]['id']}/redeliver")
    assert r.status_code == 200 and r.json()["attempts"] == 2
    assert receiver.got[-1].id == seen[0]["event_id"]
