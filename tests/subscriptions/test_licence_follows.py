"""Licences that follow subscriptions (issue #10), on SQLite and PostgreSQL: a plan with
`license = true` issues one licence per subscription (a retried create, a replayed settle or a
re-run hook never issue a second), a renewal extends the same licence id (checked offline, with
the JWKS alone: `exp` moved, `lid` unchanged), a plan change moves its terms on the same id, a
lapse or a cancel expires it (validate says so with a code), a failure anywhere in the
subscription's unit of work leaves no licence behind, and a free-licence code is spent only
with its licence issued."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import tollkeep.licensing.service as licensing_service
from tests.conftest import bearer
from tests.factories import new_customer
from tollkeep.licensing import keys_from_jwks, verify
from tollkeep.licensing.models import License
from tollkeep.runtime import Tollkeep
from tollkeep.subscriptions.models import CodeRedemption

from .helpers import advance, at, topics

GRACE = timedelta(days=3)


@pytest.fixture
def catalog_file(catalog_file: Path) -> Path:
    """The subscriptions catalog with licences on Pro (3 machines) and Team (5 machines)."""
    text = catalog_file.read_text()
    text = text.replace(
        '[plans.pro]\nname = "Pro"\n', '[plans.pro]\nname = "Pro"\nlicense = true\nmax_machines = 3\n'
    )
    text = text.replace('features = ["sso"]\n', 'features = ["sso"]\nlicense = true\nmax_machines = 5\n')
    catalog_file.write_text(text)
    return catalog_file


def offline(c: TestClient, key: str) -> Any:
    """What an app does with no server: the JWKS it shipped with, and the key."""
    jwks = c.get("/v1/licenses/jwks").json()
    return verify(key, keys_from_jwks(jwks), now=at(c.get("/admin/test-clock").json()["now"]).timestamp())


def licences(stk: Tollkeep, customer_id: str) -> list[dict[str, Any]]:
    return stk.licenses.list(customer_id=customer_id)


def subscribe(c: TestClient, plan: str = "pro", ext: str = "buyer") -> tuple[str, str, dict[str, Any]]:
    cid, key = new_customer(c, ext)
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": plan})
    assert r.status_code == 201, r.text
    return cid, key, r.json()


def validate(c: TestClient, key: str) -> dict[str, Any]:
    r = c.post("/v1/licenses/validate", json={"key": key})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_one_licence_per_subscription_and_a_renewal_extends_the_same_id(
    stk: Tollkeep, sclient: TestClient
) -> None:
    c = sclient
    cid, _, sub = subscribe(c)
    lic = sub["license"]
    end = at(sub["current_period_end"])
    claims = offline(c, lic["key"])
    assert (claims.lid, claims.sub, claims.plan, claims.ver) == (lic["id"], cid, "pro", 1)
    assert claims.exp == int((end + GRACE).timestamp())  # the period end + the plan's grace
    assert (claims.entitlements, claims.max_machines) == ((), 3)
    assert c.get(f"/admin/licenses/{lic['id']}").json()["subscription_id"] == sub["id"]

    # a retried create is refused; re-running the hook (a replay) changes nothing
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "subscription_exists"
    now = stk.clock.now()
    for _ in range(2):
        stk.executor.call(lambda s: stk.subscriptions._follow_licence(s, sub["id"], now))
    assert [(x["id"], x["key_version"]) for x in licences(stk, cid)] == [(lic["id"], 1)]

    # the period ends: past due, the licence keeps working through the grace
    advance(c, end)
    assert c.get(f"/admin/subscriptions/{sub['id']}").json()["status"] == "past_due"
    assert validate(c, lic["key"])["valid"] is True
    inv = c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"][0]
    # settled, then the provider's webhook replayed: one renewal, one extension
    for changed in (True, False):
        r = c.post(f"/admin/invoices/{inv['id']}/settle")
        assert r.status_code == 200 and r.json()["changed"] is changed, r.text
    s2 = c.get(f"/admin/subscriptions/{sub['id']}").json()
    assert (s2["status"], s2["cycle"]) == ("active", 2)

    # the app online gets the re-issued key: same lid, exp moved to the new period end + grace
    v = validate(c, lic["key"])
    assert v["valid"] is True and v["key_updated"] is True
    renewed = offline(c, v["key"])
    assert (renewed.lid, renewed.ver) == (lic["id"], 2)
    assert renewed.exp == int((at(s2["current_period_end"]) + GRACE).timestamp())
    assert renewed.exp > claims.exp
    assert [(x["id"], x["key_version"]) for x in licences(stk, cid)] == [(lic["id"], 2)]
    assert [t for t, _ in topics(stk)].count("license.created") == 1
    # the event says a renewal moved the expiry only (not a new tier)
    moved = [p for t, p in topics(stk) if t == "license.tier_changed"]
    want = [(lic["id"], 2, ["expires_at"])]
    assert [(p["license_id"], p["key_version"], p["changed"]) for p in moved] == want


def test_an_app_offline_past_its_old_expiry_gets_the_renewed_key_online(
    stk: Tollkeep, sclient: TestClient
) -> None:
    c = sclient
    _, _, sub = subscribe(c)
    old = sub["license"]["key"]
    advance(c, at(sub["current_period_end"]))
    inv = c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"][0]
    c.post(f"/admin/invoices/{inv['id']}/settle")
    advance(c, seconds=int((GRACE + timedelta(days=1)).total_seconds()))  # the old key's exp passed
    with pytest.raises(Exception, match="expired"):
        offline(c, old)
    v = validate(c, old)
    assert (v["valid"], v["key_updated"]) == (True, True)
    assert offline(c, v["key"]).lid == sub["license"]["id"]
    r = c.post("/v1/licenses/activate", json={"key": old, "fingerprint": "laptop"})
    assert r.status_code == 201, r.text


def test_a_plan_change_moves_the_terms_on_the_same_licence(stk: Tollkeep, sclient: TestClient) -> None:
    c = sclient
    cid, _, sub = subscribe(c)
    lid = sub["license"]["id"]
    r = c.post(f"/admin/subscriptions/{sub['id']}/change-plan", json={"plan": "team", "when": "now"})
    assert r.status_code == 200 and r.json()["status"] == "applied", r.text
    v = validate(c, sub["license"]["key"])
    assert v["valid"] is True and v["entitlements"] == ["sso"]
    claims = offline(c, v["key"])
    assert (claims.lid, claims.plan, claims.entitlements, claims.max_machines) == (lid, "team", ("sso",), 5)
    assert claims.exp == int((at(sub["current_period_end"]) + GRACE).timestamp())  # same period
    # to a plan without a licence: it expires (not revoked: back on a licence plan, it returns)
    c.post(f"/admin/subscriptions/{sub['id']}/change-plan", json={"plan": "starter", "when": "now"})
    assert validate(c, v["key"])["code"] == "expired"
    c.post(f"/admin/subscriptions/{sub['id']}/change-plan", json={"plan": "pro", "when": "now"})
    back = validate(c, v["key"])
    assert back["valid"] is True and offline(c, back["key"]).lid == lid
    assert [x["id"] for x in licences(stk, cid)] == [lid]


def test_a_lapse_expires_the_licence_and_a_late_payment_brings_it_back(
    stk: Tollkeep, sclient: TestClient
) -> None:
    c = sclient
    _, _, sub = subscribe(c)
    key = sub["license"]["key"]
    c.post("/v1/licenses/activate", json={"key": key, "fingerprint": "laptop"})
    advance(c, at(sub["current_period_end"]) + GRACE)
    assert c.get(f"/admin/subscriptions/{sub['id']}").json()["status"] == "lapsed"
    v = validate(c, key)
    assert (v["valid"], v["code"]) == (False, "expired")
    r = c.post("/v1/licenses/checkin", json={"key": key, "fingerprint": "laptop"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "license_expired"
    lic = c.get(f"/admin/licenses/{sub['license']['id']}").json()
    assert (lic["status"], lic["expired"]) == ("active", True)  # expired, not revoked
    # paid late: reactivated, the same licence extended
    inv = c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"][0]
    assert c.post(f"/admin/invoices/{inv['id']}/settle").status_code == 200
    v = validate(c, key)
    assert v["valid"] is True and offline(c, v["key"]).lid == sub["license"]["id"]


def test_cancel_now_expires_the_licence_and_a_plan_without_one_issues_none(
    stk: Tollkeep, sclient: TestClient
) -> None:
    c = sclient
    _, _, sub = subscribe(c)
    assert c.post(f"/admin/subscriptions/{sub['id']}/cancel", json={}).status_code == 200
    v = validate(c, sub["license"]["key"])
    assert (v["valid"], v["code"]) == (False, "expired")
    cid, _, starter = subscribe(c, "starter", ext="other")
    assert "license" not in starter and licences(stk, cid) == []


def test_a_failed_create_leaves_no_licence(
    stk: Tollkeep, sclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The licence is written in the subscription's transaction: a failure after it (here the
    last step, the outbox event) rolls both back."""
    c = sclient
    cid, _ = new_customer(c, "buyer")
    emit = stk.events.emit

    def failing(s: Any, event: Any) -> None:
        if event.topic == "subscription.created":
            raise RuntimeError("crash after the licence was written")
        emit(s, event)

    monkeypatch.setattr(stk.events, "emit", failing)
    with pytest.raises(RuntimeError, match="crash"):
        stk.subscriptions.create(cid, "pro")
    monkeypatch.undo()
    with stk.db.scope(write=False) as s:
        assert s.execute(select(func.count()).select_from(License.__table__)).scalar_one() == 0
    assert stk.subscriptions.create(cid, "pro")["license"]["key"]
    assert len(licences(stk, cid)) == 1


def test_a_free_licence_code_is_not_spent_when_issuing_fails(
    stk: Tollkeep, sclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = sclient
    r = c.post("/admin/codes", json={"code": "APP", "kind": "free_license", "plans": ["team"]})
    assert r.status_code == 201, r.text
    cid, key = new_customer(c, "buyer")

    def broken_signer(*args: Any, **kw: Any) -> str:
        raise RuntimeError("the signer failed")

    monkeypatch.setattr(licensing_service, "sign", broken_signer)
    with pytest.raises(RuntimeError, match="signer"):
        stk.subscriptions.codes.redeem_free_license(cid, "APP")
    monkeypatch.undo()
    assert c.get("/admin/codes/APP").json()["redemptions"] == 0
    assert licences(stk, cid) == []
    # the customer still has the code: redeemed now, the redemption names the licence
    r = c.post("/v1/codes/redeem", json={"code": "app"}, headers=bearer(key))
    assert r.status_code == 201, r.text
    assert offline(c, r.json()["key"]).plan == "team"
    red = CodeRedemption.__table__
    with stk.db.scope(write=False) as s:
        assert s.execute(select(red.c.license_id)).scalars().all() == [r.json()["id"]]
    assert c.get("/admin/codes/APP").json()["redemptions"] == 1


def test_a_locked_signing_key_never_blocks_billing(
    stk: Tollkeep, sclient: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is signed in the subscription's transaction: with the signing key encrypted and
    no passphrase, a subscription is still created and renewed; the key comes once it unlocks."""
    c = sclient
    monkeypatch.setattr(stk.licenses, "_passphrase", lambda: "s3cret")
    stk.licenses.rotate_key()  # an encrypted signing key
    monkeypatch.setattr(stk.licenses, "_passphrase", lambda: None)  # the server lost it
    cid, _ = new_customer(c, "buyer")
    r = c.post("/admin/subscriptions", json={"customer_id": cid, "plan": "pro"})
    assert r.status_code == 201, r.text
    sub = r.json()
    assert sub["license"]["key"] is None and sub["license"]["id"]
    advance(c, at(sub["current_period_end"]))
    inv = c.get(f"/admin/subscriptions/{sub['id']}/invoices").json()["data"][0]
    assert c.post(f"/admin/invoices/{inv['id']}/settle").status_code == 200
    assert c.get(f"/admin/subscriptions/{sub['id']}").json()["cycle"] == 2
    monkeypatch.setattr(stk.licenses, "_passphrase", lambda: "s3cret")
    lic = stk.licenses.of_subscription(sub["id"])
    assert lic is not None and lic["id"] == sub["license"]["id"]
    claims = offline(c, lic["key"])
    assert (claims.lid, claims.ver) == (sub["license"]["id"], 2)
