"""Licence keys end to end through the HTTP API: issued by the admin, verified offline with the
JWKS alone (our vendorable verifier and a plain `cryptography` check), validated online,
machines activated up to max_machines (also under concurrency), checked in, deactivated,
re-issued with new terms under the same id, revoked, and the signing key rotated."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from fastapi.testclient import TestClient

from tests.factories import new_customer
from tollkeep.kit.clock import FrozenClock
from tollkeep.licensing.verify import LicenseInvalid, keys_from_jwks, verify
from tollkeep.runtime import Tollkeep


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def issue(client: TestClient, cid: str, **body: object) -> dict:
    r = client.post("/admin/licenses", json={"customer_id": cid, "plan": "pro", **body})
    assert r.status_code == 201, r.text
    return r.json()


def test_a_licence_verifies_offline_with_the_jwks_alone(client: TestClient, clock: FrozenClock) -> None:
    cid, _ = new_customer(client)
    lic = issue(client, cid, max_machines=2, expires_at=(clock.now() + timedelta(days=30)).isoformat())
    jwks = client.get("/v1/licenses/jwks").json()
    assert [k["kty"] for k in jwks["keys"]] == ["OKP"] and jwks["keys"][0]["crv"] == "Ed25519"
    head, body, sig = lic["key"].split(".")
    header, claims = json.loads(b64d(head)), json.loads(b64d(body))
    assert header["alg"] == "EdDSA" and header["kid"] == jwks["keys"][0]["kid"]
    assert claims["lid"] == lic["id"] and claims["sub"] == cid and claims["plan"] == "pro"
    assert claims["entitlements"] == ["basic", "priority"] and claims["max_machines"] == 2
    assert claims["exp"] == int((clock.now() + timedelta(days=30)).timestamp()) and "iat" in claims
    # any Ed25519 implementation checks it: here `cryptography` alone, no tollkeep code
    pub = Ed25519PublicKey.from_public_bytes(b64d(jwks["keys"][0]["x"]))
    pub.verify(b64d(sig), f"{head}.{body}".encode())
    with pytest.raises(InvalidSignature):
        pub.verify(b64d(sig), f"{head}.{body}x".encode())
    # and our vendorable verifier
    got = verify(lic["key"], keys_from_jwks(jwks), now=clock.now().timestamp())
    assert got.lid == lic["id"] and got.has("priority") and not got.has("export")


@pytest.mark.parametrize(
    "tamper, code",
    [
        (lambda t: t[:-3] + ("AAA" if not t.endswith("AAA") else "BBB"), "bad_signature"),
        (lambda t: "x.y", "malformed"),
        (lambda t: "not a licence", "malformed"),
        (lambda t: t.split(".")[0] + "." + t.split(".")[1] + ".", "bad_signature"),
    ],
)
def test_a_forged_or_broken_key_is_refused_offline_and_online(
    client: TestClient, clock: FrozenClock, tamper: object, code: str
) -> None:
    cid, _ = new_customer(client)
    key = tamper(issue(client, cid)["key"])  # type: ignore[operator]
    keys = keys_from_jwks(client.get("/v1/licenses/jwks").json())
    with pytest.raises(LicenseInvalid) as err:
        verify(key, keys, now=clock.now().timestamp())
    assert err.value.code == code
    r = client.post("/v1/licenses/validate", json={"key": key})
    assert r.status_code == 200 and r.json()["valid"] is False and r.json()["code"] == code


def test_claims_changed_by_hand_break_the_signature(client: TestClient) -> None:
    cid, _ = new_customer(client)
    head, body, sig = issue(client, cid, max_machines=1)["key"].split(".")
    claims = json.loads(b64d(body))
    claims["max_machines"] = 1000
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    r = client.post("/v1/licenses/validate", json={"key": f"{head}.{forged}.{sig}"})
    assert r.json() == {"valid": False, "code": "bad_signature", "message": "the signature does not match"}
    r = client.post("/v1/licenses/activate", json={"key": f"{head}.{forged}.{sig}", "fingerprint": "m1"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "license_bad_signature"


def test_validate_activate_deactivate_and_max_machines(client: TestClient) -> None:
    cid, _ = new_customer(client)
    key = issue(client, cid, max_machines=2)["key"]
    r = client.post("/v1/licenses/validate", json={"key": key, "fingerprint": "m1"})
    assert r.json()["valid"] is True and r.json()["code"] == "valid"
    assert r.json()["entitlements"] == ["basic", "priority"] and r.json()["machine"] == {"activated": False}
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "m1"}).status_code == 201
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "m1"}).status_code == 200
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "m2"}).status_code == 201
    r = client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "m3"})
    assert r.status_code == 409 and r.json()["error"]["code"] == "max_machines_reached"
    assert r.json()["error"]["machines_active"] == 2
    r = client.post("/v1/licenses/deactivate", json={"key": key, "fingerprint": "m1"})
    assert r.status_code == 200 and r.json()["status"] == "deactivated"
    r = client.post("/v1/licenses/deactivate", json={"key": key, "fingerprint": "m1"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "machine_not_activated"
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "m3"}).status_code == 201
    shown = client.get(f"/admin/licenses/{json.loads(b64d(key.split('.')[1]))['lid']}").json()
    assert shown["machines_active"] == 2 and len(shown["machines"]) == 3
    assert all("fingerprint" not in m for m in shown["machines"])  # only its hash is stored


def test_max_machines_holds_under_concurrent_activations(client: TestClient) -> None:
    cid, _ = new_customer(client)
    key = issue(client, cid, max_machines=3)["key"]
    codes: list[int] = []
    lock = threading.Lock()

    def activate(i: int) -> None:
        r = client.post("/v1/licenses/activate", json={"key": key, "fingerprint": f"machine-{i}"})
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=activate, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [201] * 3 + [409] * 9
    lid = json.loads(b64d(key.split(".")[1]))["lid"]
    assert client.get(f"/admin/licenses/{lid}").json()["machines_active"] == 3


def test_a_silent_machine_gives_its_seat_up_after_the_grace(client: TestClient, clock: FrozenClock) -> None:
    cid, _ = new_customer(client)
    key = issue(client, cid, max_machines=1, grace_seconds=3600)["key"]
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "old"}).status_code == 201
    clock.advance(timedelta(minutes=50))
    assert client.post("/v1/licenses/checkin", json={"key": key, "fingerprint": "old"}).status_code == 200
    clock.advance(timedelta(minutes=50))  # 50 min since the check-in: still within the grace
    r = client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "new"})
    assert r.status_code == 409
    clock.advance(timedelta(minutes=11))
    assert client.post("/v1/licenses/activate", json={"key": key, "fingerprint": "new"}).status_code == 201
    r = client.post("/v1/licenses/checkin", json={"key": key, "fingerprint": "old"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "machine_not_activated"


def test_new_terms_keep_the_licence_id_and_reach_the_app_at_its_next_validation(
    client: TestClient, tk: Tollkeep
) -> None:
    cid, _ = new_customer(client)
    first = issue(client, cid, max_machines=1)
    r = client.patch(f"/admin/licenses/{first['id']}", json={"plan": "free", "max_machines": 5})
    assert r.status_code == 200 and r.json()["id"] == first["id"] and r.json()["key_version"] == 2
    keys = keys_from_jwks(client.get("/v1/licenses/jwks").json())
    assert verify(r.json()["key"], keys, now=tk.clock.now().timestamp()).max_machines == 5
    v = client.post("/v1/licenses/validate", json={"key": first["key"]}).json()
    assert v["valid"] and v["key_updated"] and v["entitlements"] == ["basic"]
    newer = verify(v["key"], keys, now=tk.clock.now().timestamp())
    assert newer.lid == first["id"] and newer.ver == 2 and newer.plan == "free"


def test_revoked_and_expired_licences(client: TestClient, clock: FrozenClock) -> None:
    cid, _ = new_customer(client)
    lic = issue(client, cid, expires_at=(clock.now() + timedelta(days=1)).isoformat())
    assert (
        client.post("/v1/licenses/activate", json={"key": lic["key"], "fingerprint": "m"}).status_code == 201
    )
    clock.advance(timedelta(days=1, minutes=2))
    v = client.post("/v1/licenses/validate", json={"key": lic["key"]}).json()
    assert v["valid"] is False and v["code"] == "expired" and v["license_id"] == lic["id"]
    r = client.post("/v1/licenses/checkin", json={"key": lic["key"], "fingerprint": "m"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "license_expired"
    other = issue(client, cid)
    assert client.post(f"/admin/licenses/{other['id']}/revoke").json()["status"] == "revoked"
    v = client.post("/v1/licenses/validate", json={"key": other["key"]}).json()
    assert v["valid"] is False and v["code"] == "revoked"
    assert other["id"] in [x["id"] for x in client.get("/v1/licenses/revoked").json()["data"]]
    r = client.post("/v1/licenses/activate", json={"key": other["key"], "fingerprint": "m"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "license_revoked"


def test_rotation_keeps_old_licences_verifying(client: TestClient, clock: FrozenClock) -> None:
    cid, _ = new_customer(client)
    old = issue(client, cid)
    kid = client.post("/admin/licenses/rotate-key").json()["kid"]
    new = issue(client, cid)
    jwks = client.get("/v1/licenses/jwks").json()
    assert jwks["keys"][0]["kid"] == kid and len(jwks["keys"]) == 2
    keys = keys_from_jwks(jwks)
    now = clock.now().timestamp()
    assert verify(old["key"], keys, now=now).kid != verify(new["key"], keys, now=now).kid == kid
    for lic in (old, new):
        assert client.post("/v1/licenses/validate", json={"key": lic["key"]}).json()["valid"] is True


def test_recovery_reissues_the_same_ids_to_the_sellers_webhook_and_tells_the_caller_nothing(
    client: TestClient, tk: Tollkeep
) -> None:
    cid, _ = new_customer(client, ext="alice")
    lic = issue(client, cid)
    for email in ("alice@example.com", "ALICE@example.com", "nobody@example.com"):
        r = client.post("/v1/licenses/recover", json={"email": email})
        assert r.status_code == 202 and r.json()["status"] == "accepted"
    from sqlalchemy import select

    from tollkeep.kit.models import table_of
    from tollkeep.outbox.models import OutboxEvent

    ob = table_of(OutboxEvent)
    with tk.db.scope(write=False) as s:
        sent = [
            r.payload for r in s.execute(select(ob).where(ob.c.topic == "license.recovery_requested")).all()
        ]
    assert len(sent) == 2 and all(p["licenses"][0]["license_id"] == lic["id"] for p in sent)
    keys = keys_from_jwks(client.get("/v1/licenses/jwks").json())
    assert verify(sent[0]["licenses"][0]["key"], keys, now=tk.clock.now().timestamp()).lid == lic["id"]


@pytest.mark.parametrize(
    "path, body, status, code",
    [
        ("/admin/licenses", {"customer_id": "cus_nope", "plan": "pro"}, 404, "customer_not_found"),
        ("/admin/licenses", {"customer_id": "x", "plan": "nope"}, 422, "unknown_plan"),
        ("/admin/licenses", {"customer_id": "x", "plan": "pro", "max_machines": 0}, 422, None),
        ("/v1/licenses/activate", {"key": "a.b.c"}, 422, None),
        ("/v1/licenses/activate", {"key": "a.b.c", "fingerprint": "m", "x": 1}, 422, None),
        ("/v1/licenses/validate", {"key": "x" * 9000}, 422, None),
        ("/v1/licenses/recover", {"email": "no-at-sign"}, 422, "invalid_email"),
    ],
)
def test_bad_input_gets_a_clear_error(
    client: TestClient, path: str, body: dict, status: int, code: str | None
) -> None:
    r = client.post(path, json=body)
    assert r.status_code == status, r.text
    assert "code" in r.json()["error"]
    if code:
        assert r.json()["error"]["code"] == code


def test_licence_routes_need_the_admin_token(client: TestClient) -> None:
    r = client.post(
        "/admin/licenses", json={"customer_id": "x", "plan": "pro"}, headers={"Authorization": ""}
    )
    assert r.status_code == 401


def test_the_cli_issues_verifies_offline_and_revokes(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import cli

    monkeypatch.chdir(tmp_path)
    for var in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    cli("migrate")
    cid = json.loads(cli("customers", "create", "cli-user", "--json"))["id"]
    lic = json.loads(cli("licenses", "issue", cid, "--plan", "pro", "--max-machines", "2", "--json"))
    (tmp_path / "jwks.json").write_text(cli("licenses", "jwks"))
    checked = json.loads(
        cli("licenses", "verify", lic["key"], "--jwks", str(tmp_path / "jwks.json"), "--json")
    )
    assert checked["valid"] is True and checked["lid"] == lic["id"] and checked["max_machines"] == 2
    assert json.loads(cli("licenses", "revoke", lic["id"], "--json"))["status"] == "revoked"
    assert lic["id"] in cli("licenses", "list")
