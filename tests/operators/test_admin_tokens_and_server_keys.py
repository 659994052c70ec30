"""Admin tokens with roles and server keys: issued once, hashed, scoped, revocable, and every
issue and revocation is in the audit log (issue #7, items 1 and 2)."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import bearer, make_settings
from tollkeep.app import create_app
from tollkeep.kit.actor import cli_actor
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep


def test_a_server_key_is_issued_once_and_stored_hashed(client: TestClient, tk: Tollkeep) -> None:
    r = client.post("/admin/server-keys", json={"name": "backend", "scopes": ["usage:write", "balance:read"]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert (
        body["key"].startswith("tk_sk_") and body["id"] and body["scopes"] == ["usage:write", "balance:read"]
    )
    listed = client.get("/admin/server-keys").json()
    assert [k["id"] for k in listed] == [body["id"]] and "key" not in listed[0]
    with tk.db.scope(write=False) as s:
        dump = " ".join(str(v) for row in s.execute(text("SELECT * FROM operator_keys")) for v in row)
    assert body["key"] not in dump and body["key"][len("tk_sk_") :] not in dump


def test_scopes_must_be_known(client: TestClient) -> None:
    r = client.post("/admin/server-keys", json={"name": "x", "scopes": ["admin:everything"]})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_scope"


def test_a_server_key_or_buyer_key_is_not_an_admin_credential(client: TestClient) -> None:
    sk = client.post("/admin/server-keys", json={"name": "backend"}).json()["key"]
    cust = client.post("/admin/customers", json={"external_id": "c1"}).json()["id"]
    buyer = client.post(f"/admin/customers/{cust}/keys").json()["key"]
    for token in (sk, buyer, "tka_" + "x" * 40):
        r = client.get("/admin/customers", headers=bearer(token))
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_admin_token", token


def test_a_read_only_admin_token_reads_and_never_writes(client: TestClient) -> None:
    r = client.post("/admin/admin-tokens", json={"name": "dashboard", "role": "read_only"})
    assert r.status_code == 201 and r.json()["key"].startswith("tka_") and r.json()["role"] == "read_only"
    ro = bearer(r.json()["key"])
    assert client.get("/admin/customers", headers=ro).status_code == 200
    assert client.get("/admin/audit", headers=ro).status_code == 200
    w = client.post("/admin/customers", headers=ro, json={"external_id": "nope"})
    assert w.status_code == 403 and w.json()["error"]["code"] == "read_only_token"
    assert client.get("/admin/customers/nope").status_code == 404  # nothing was made


def test_an_admin_token_acts_under_its_own_id_until_revoked(client: TestClient) -> None:
    made = client.post("/admin/admin-tokens", json={"name": "ops", "role": "admin"}).json()
    ops = bearer(made["key"])
    r = client.post("/admin/customers", headers=ops, json={"external_id": "by-ops"})
    assert r.status_code == 201
    entry = client.get("/admin/audit", params={"action": "customer.create"}).json()["data"][0]
    assert entry["actor"] == {"kind": "admin", "id": made["id"]}
    assert client.post(f"/admin/admin-tokens/{made['id']}/revoke").status_code == 200
    r = client.get("/admin/customers", headers=ops)
    assert r.status_code == 401


def test_issuing_and_revoking_keys_is_audited_newest_first(client: TestClient) -> None:
    sk = client.post("/admin/server-keys", json={"name": "backend"}).json()
    client.post(f"/admin/server-keys/{sk['id']}/revoke")
    page = client.get("/admin/audit", params={"limit": 2}).json()
    first, second = page["data"]
    assert first["action"] == "server_key.revoke" and second["action"] == "server_key.create"
    assert first["actor"] == {"kind": "admin", "id": "env"}
    assert first["target"] == {"kind": "operator_key", "id": sk["id"]}
    assert first["before"]["status"] == "active" and first["after"]["status"] == "revoked"
    assert first["at"] and first["address"]
    assert sk["key"] not in str(page)
    again = client.post(f"/admin/server-keys/{sk['id']}/revoke")
    assert again.status_code == 409
    assert client.get("/admin/audit", params={"limit": 1}).json()["data"][0]["id"] == first["id"]


def test_the_audit_log_is_append_only(client: TestClient, tk: Tollkeep) -> None:
    client.post("/admin/server-keys", json={"name": "backend"})
    for statement in ("UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log"):
        try:
            with tk.db.scope() as s:
                s.execute(text(statement))
        except Exception as exc:
            assert "append-only" in str(exc)
        else:
            raise AssertionError(f"{statement} was allowed")
    assert client.get("/admin/audit").json()["data"][0]["action"] == "server_key.create"


def test_without_any_admin_token_the_admin_api_is_off(tmp_path: Path, clock: FrozenClock) -> None:
    settings = make_settings(f"sqlite:///{tmp_path / 'off.db'}").model_copy(update={"admin_token": None})
    with Tollkeep(settings, clock=clock) as tk, TestClient(create_app(runtime=tk)) as client:
        r = client.get("/admin/customers", headers=bearer("anything"))
        assert r.status_code == 401 and r.json()["error"]["code"] == "admin_disabled"
        tk.operators.create_admin_token("ops", "admin", actor=cli_actor())
        r = client.get("/admin/customers", headers=bearer("anything"))
        assert r.json()["error"]["code"] == "invalid_admin_token"
