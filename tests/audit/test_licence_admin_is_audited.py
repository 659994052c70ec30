"""Licence admin actions are audited in the same transaction as the change: one entry per
change, who and what, before/after views without the key, and none for a refused change."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.audit.conftest import Entries

ENV_ADMIN = {"kind": "admin", "id": "env"}


def only(entries: Entries, action: str) -> dict[str, Any]:
    found = entries(action=action)
    assert len(found) == 1, found
    return found[0]


def test_licence_create_update_revoke_and_rotate_are_audited(client: TestClient, entries: Entries) -> None:
    cid = client.post("/admin/customers", json={"external_id": "lic-audit"}).json()["id"]
    lic = client.post("/admin/licenses", json={"customer_id": cid, "plan": "pro", "max_machines": 2})
    assert lic.status_code == 201, lic.text
    lid, key = lic.json()["id"], lic.json()["key"]
    assert lid.startswith("lic_") and not lid.startswith("lic__")

    e = only(entries, "license.create")
    assert e["actor"] == ENV_ADMIN and e["target"] == {"kind": "license", "id": lid}
    assert e["after"]["max_machines"] == 2 and "key" not in e["after"]

    r = client.patch(f"/admin/licenses/{lid}", json={"max_machines": 5})
    assert r.status_code == 200, r.text
    e = only(entries, "license.update")
    assert (e["before"]["max_machines"], e["after"]["max_machines"]) == (2, 5)
    assert "key" not in e["after"]

    assert client.post(f"/admin/licenses/{lid}/revoke").status_code == 200
    e = only(entries, "license.revoke")
    assert (e["before"]["status"], e["after"]["status"]) == ("active", "revoked")
    # revoking again changes nothing and records nothing; a revoked licence cannot change
    assert client.post(f"/admin/licenses/{lid}/revoke").status_code == 200
    assert client.patch(f"/admin/licenses/{lid}", json={"max_machines": 1}).status_code == 409
    assert len(entries(action="license.revoke")) == 1 and len(entries(action="license.update")) == 1

    kid = client.post("/admin/licenses/rotate-key").json()["kid"]
    e = only(entries, "license.rotate_key")
    assert e["target"] == {"kind": "license_key", "id": kid}
    assert all(key not in str(x) for x in entries())
