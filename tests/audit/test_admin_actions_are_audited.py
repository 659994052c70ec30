"""Every admin action over the API leaves exactly one audit entry: who (the admin token, by
id), what, on what, when, from which address, and before/after — for money, the balance
(issue #7 item 2)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.audit.conftest import Entries
from tests.conftest import bearer
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.kit.clock import FrozenClock, iso
from tollkeep.runtime import Tollkeep

ENV_ADMIN = {"kind": "admin", "id": "env"}


def only(entries: Entries, action: str) -> dict[str, Any]:
    found = entries(action=action)
    assert len(found) == 1, found
    return found[0]


def test_a_grant_is_audited_with_the_balance_before_and_after(
    client: TestClient, entries: Entries, clock: FrozenClock
) -> None:
    cid = client.post("/admin/customers", json={"external_id": "g"}).json()["id"]
    g = client.post(
        f"/admin/customers/{cid}/grants", json={"amount": 10, "idempotency_key": "g1", "note": "welcome"}
    ).json()
    e = only(entries, "grant.create")
    assert e["actor"] == ENV_ADMIN and e["address"] == "testclient" and e["at"] == iso(clock.now())
    assert e["target"] == {"kind": "customer", "id": cid}
    assert e["before"] == {"balance": 0}
    after = e["after"]
    assert (after["id"], after["operation_id"], after["amount"], after["balance"]) == (
        g["id"],
        g["operation_id"],
        10,
        10,
    )
    assert after["idempotency_key"] == "g1" and after["note"] == "welcome" and after["source"] == "purchase"
    # a second grant, by a database admin token: its own id, the balance moving on
    ops = client.post("/admin/admin-tokens", json={"name": "ops", "role": "admin"}).json()
    r = client.post(
        f"/admin/customers/{cid}/grants",
        headers=bearer(ops["key"]),
        json={"amount": 5, "idempotency_key": "g2"},
    )
    assert r.status_code == 201
    newest = entries(action="grant.create")[0]
    assert newest["actor"] == {"kind": "admin", "id": ops["id"]}
    assert newest["before"] == {"balance": 10} and newest["after"]["balance"] == 15


def test_a_refund_is_audited_with_the_charge_and_the_balance(
    client: TestClient, entries: Entries, charged: Callable[[str], tuple[str, str, str]]
) -> None:
    cid, _, event = charged("r")
    r = client.post(f"/admin/charges/{event}/refund", json={"idempotency_key": "r1", "reason": "oops"})
    assert r.status_code == 201, r.text
    e = only(entries, "refund.create")
    assert e["actor"] == ENV_ADMIN and e["address"] == "testclient"
    assert e["target"] == {"kind": "customer", "id": cid}
    assert e["before"] == {"balance": 9, "charge_id": event, "refundable": 1}
    after = e["after"]
    assert (after["id"], after["charge_id"], after["amount"], after["balance"], after["refundable"]) == (
        r.json()["id"],
        event,
        1,
        10,
        0,
    )
    assert after["reason"] == "oops" and after["idempotency_key"] == "r1"


def test_an_overdraft_change_is_audited_before_and_after(client: TestClient, entries: Entries) -> None:
    cid = client.post("/admin/customers", json={"external_id": "o"}).json()["id"]
    assert client.post(f"/admin/customers/{cid}/overdraft", json={"limit": 50}).status_code == 200
    e = only(entries, "overdraft.set")
    assert e["actor"] == ENV_ADMIN and e["target"] == {"kind": "customer", "id": cid}
    assert e["before"] == {"customer_id": cid, "overdraft_limit": 0, "overdraft_used": 0}
    assert e["after"] == {"customer_id": cid, "overdraft_limit": 50, "overdraft_used": 0}
    # the limit it has already: nothing changed, nothing to audit
    assert client.post(f"/admin/customers/{cid}/overdraft", json={"limit": 50}).status_code == 200
    assert len(entries(action="overdraft.set")) == 1


def test_a_sweep_that_moved_credits_is_audited_with_its_counts(
    client: TestClient, entries: Entries, clock: FrozenClock
) -> None:
    cid = client.post("/admin/customers", json={"external_id": "s"}).json()["id"]
    expires = iso(clock.now() + timedelta(hours=1))
    r = client.post(
        f"/admin/customers/{cid}/grants", json={"amount": 3, "idempotency_key": "p", "expires_at": expires}
    )
    assert r.status_code == 201
    clock.advance(timedelta(hours=2))
    assert client.post("/admin/sweep").json() == {"holds_released": 0, "grants_expired": 1}
    e = only(entries, "ledger.sweep")
    assert e["actor"] == ENV_ADMIN and e["address"] == "testclient"
    assert e["target"] == {"kind": "ledger", "id": None}
    assert e["after"] == {"holds_released": 0, "grants_expired": 1} and e["before"] is None
    # a sweep with nothing to do changes nothing
    assert client.post("/admin/sweep").json() == {"holds_released": 0, "grants_expired": 0}
    assert len(entries(action="ledger.sweep")) == 1


def test_every_change_to_a_key_is_audited_and_a_reused_key_is_not(
    client: TestClient, entries: Entries, clock: FrozenClock
) -> None:
    cid = client.post("/admin/customers", json={"external_id": "k"}).json()["id"]
    made = client.post(f"/admin/customers/{cid}/keys", json={"name": "laptop"}).json()
    kid = made["id"]
    e = only(entries, "key.create")
    assert e["actor"] == ENV_ADMIN and e["address"] == "testclient"
    assert e["target"] == {"kind": "api_key", "id": kid}
    assert e["before"] is None and e["after"]["customer_id"] == cid and e["after"]["prefix"] == made["prefix"]
    assert "key" not in e["after"] and "reused" not in e["after"]
    # the customer's active key handed back: nothing was made
    assert client.post(f"/admin/customers/{cid}/keys").json()["reused"] is True
    assert len(entries(action="key.create")) == 1

    assert client.patch(f"/admin/keys/{kid}", json={"name": "desktop", "scopes": ["balance:read"]}).is_success
    e = only(entries, "key.update")
    assert (e["before"]["name"], e["after"]["name"]) == ("laptop", "desktop")
    assert e["after"]["scopes"] == ["balance:read"] and len(e["before"]["scopes"]) > 1
    for same in ({"name": "desktop"}, {}):  # nothing changes: no entry
        assert client.patch(f"/admin/keys/{kid}", json=same).status_code == 200
    assert len(entries(action="key.update")) == 1

    assert client.post(f"/admin/keys/{kid}/suspend").is_success
    assert client.post(f"/admin/keys/{kid}/suspend").is_success  # suspended already
    e = only(entries, "key.suspend")
    assert (e["before"]["status"], e["after"]["status"]) == ("active", "suspended")
    assert client.post(f"/admin/keys/{kid}/resume").is_success
    e = only(entries, "key.resume")
    assert (e["before"]["status"], e["after"]["status"]) == ("suspended", "active")

    new = client.post(f"/admin/keys/{kid}/rotate", json={"grace_seconds": 60}).json()
    e = only(entries, "key.rotate")
    assert e["target"] == {"kind": "api_key", "id": kid}
    assert e["before"]["id"] == kid and e["before"]["expires_at"] is None
    assert e["after"]["id"] == new["id"] and e["after"]["rotated_from"] == kid
    assert e["after"]["old_key"]["expires_at"] == iso(clock.now() + timedelta(seconds=60))
    assert "key" not in e["after"]

    assert client.post(f"/admin/keys/{new['id']}/revoke").is_success
    e = only(entries, "key.revoke")
    assert e["target"] == {"kind": "api_key", "id": new["id"]}
    assert (e["before"]["status"], e["after"]["status"]) == ("active", "revoked")
    assert e["after"]["revoked_at"] == iso(clock.now())
    assert client.post(f"/admin/keys/{new['id']}/revoke").is_success  # revoked already: no entry
    assert len(entries(action="key.revoke")) == 1


def test_a_catalog_reload_that_changed_the_version_is_audited(
    reloadable: tuple[TestClient, Tollkeep], catalog_file: Path
) -> None:
    c, _ = reloadable

    def reloads() -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = c.get("/admin/audit", params={"action": "catalog.reload"}).json()["data"]
        return data

    before = c.get("/admin/catalog").json()["version"]
    same = c.post("/admin/catalog/reload").json()
    assert same["changed"] is False and reloads() == []  # the same file: nothing changed
    catalog_file.write_text(DEFAULT_CATALOG_TEXT.replace('version = "2026-01-01"', 'version = "2026-04-01"'))
    done = c.post("/admin/catalog/reload").json()
    assert done["changed"] is True
    [e] = reloads()
    assert e["actor"] == ENV_ADMIN and e["address"] == "testclient"
    assert e["target"] == {"kind": "catalog", "id": None}
    assert e["before"] == {"version": before}
    assert e["after"] == {"version": done["version"], "source": str(catalog_file)}


def test_the_actions_of_one_session_read_back_newest_first(
    client: TestClient, entries: Entries, charged: Callable[[str], tuple[str, str, str]]
) -> None:
    cid, _, event = charged("all")
    client.post(f"/admin/customers/{cid}/overdraft", json={"limit": 5})
    client.post(f"/admin/charges/{event}/refund", json={"idempotency_key": "r"})
    client.patch(f"/admin/customers/{cid}", json={"name": "All"})
    assert [e["action"] for e in entries()] == [
        "customer.update",
        "refund.create",
        "overdraft.set",
        "grant.create",
        "key.create",
        "customer.create",
    ]
    # the buyer's charge is in the journal, not in the audit log
    assert entries(actor="env") == entries() and entries(target=cid)[0]["action"] == "customer.update"
