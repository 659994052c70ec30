"""Key rotation is idempotent and never hands a deadline to the new key (issue #5, item 14)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

from tests.conftest import bearer
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import AuthError, Conflict
from tollkeep.runtime import Tollkeep


def test_a_retried_rotate_refuses_and_changes_nothing(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = tk.customers.create("rot")["id"]
    old = tk.keys.create(cid, scopes=["balance:read", "usage:write"])
    new = tk.keys.rotate(old["id"], grace_seconds=60)
    assert new["expires_at"] is None and new["rotated_from"] == old["id"]
    with pytest.raises(Conflict) as exc:
        tk.keys.rotate(old["id"], grace_seconds=60)  # the same call again (a retry)
    assert exc.value.code == "key_already_rotated"
    assert exc.value.details["replacement_id"] == new["id"]
    assert [k["id"] for k in tk.keys.list(customer_id=cid)] == [old["id"], new["id"]]
    # the grace ends for the old key only; the new key lives on
    clock.advance(timedelta(seconds=61))
    with pytest.raises(AuthError, match="expired"):
        tk.keys.authenticate(old["key"])
    assert tk.keys.authenticate(new["key"]).customer_id == cid
    assert tk.keys.get(new["id"])["expires_at"] is None


def test_rotating_an_expired_key_gives_a_live_key(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = tk.customers.create("late")["id"]
    old = tk.keys.create(cid, expires_at=clock.now() + timedelta(minutes=1))
    clock.advance(timedelta(minutes=5))
    new = tk.keys.rotate(old["id"])
    assert new["expires_at"] is None
    assert tk.keys.authenticate(new["key"]).customer_id == cid
    assert tk.keys.get(old["id"])["status"] == "revoked"


def test_rotate_may_set_the_new_keys_expiry(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = tk.customers.create("exp")["id"]
    old = tk.keys.create(cid, expires_at=clock.now() + timedelta(days=1))
    until = clock.now() + timedelta(days=90)
    new = tk.keys.rotate(old["id"], expires_at=until)
    assert tk.keys.get(new["id"])["expires_at"] == until.isoformat().replace("+00:00", "Z")


def test_rotate_over_http_is_idempotent(client: TestClient, tk: Tollkeep) -> None:
    cid = client.post("/admin/customers", json={"external_id": "rot-http"}).json()["id"]
    kid = client.post(f"/admin/customers/{cid}/keys").json()["id"]
    first = client.post(f"/admin/keys/{kid}/rotate", json={"grace_seconds": 300})
    assert first.status_code == 201 and first.json()["expires_at"] is None
    again = client.post(f"/admin/keys/{kid}/rotate", json={"grace_seconds": 300})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "key_already_rotated"
    assert again.json()["error"]["replacement_id"] == first.json()["id"]
    assert client.get("/v1/balance", headers=bearer(first.json()["key"])).status_code == 200
    assert len(client.get(f"/admin/customers/{cid}/keys").json()) == 2
