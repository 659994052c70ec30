"""No plaintext key — a buyer's key, a rotated one, a server key, an admin token — is ever in
the audit log, in any column of any row (the whole table is searched)."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient


def test_no_issued_key_is_in_the_audit_log(client: TestClient, dump: Callable[[], tuple[int, str]]) -> None:
    cid = client.post("/admin/customers", json={"external_id": "secrets"}).json()["id"]
    first = client.post(f"/admin/customers/{cid}/keys").json()
    second = client.post(f"/admin/customers/{cid}/keys", json={"force_new": True, "name": "ci"}).json()
    rotated = client.post(f"/admin/keys/{first['id']}/rotate", json={"grace_seconds": 30}).json()
    rotated_again = client.post(f"/admin/keys/{second['id']}/rotate").json()
    server = client.post("/admin/server-keys", json={"name": "backend"}).json()
    token = client.post("/admin/admin-tokens", json={"name": "ops", "role": "admin"}).json()
    issued = [k["key"] for k in (first, second, rotated, rotated_again, server, token)]
    assert all(issued) and len(set(issued)) == 6
    rows, everything = dump()
    assert rows == 7  # customer.create, 2 key.create, 2 key.rotate, server_key and admin_key
    for key in issued:
        secret = key[-30:]  # past every prefix and clear handle: the part only the key holds
        assert key not in everything and secret not in everything, key
    # what is there instead: the clear handles, by which an operator knows a key
    assert first["prefix"] in everything and rotated["prefix"] in everything
