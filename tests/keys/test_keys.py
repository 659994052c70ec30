"""API keys: hashing, look-up, scopes, expiry, IP allowlists, suspend/revoke/rotate, reuse."""

from __future__ import annotations

from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import bearer
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import AuthError, Forbidden
from tollkeep.runtime import Tollkeep


def customer(tk: Tollkeep, ext: str = "k1") -> str:
    return str(tk.customers.create(ext)["id"])


def test_plaintext_never_stored(tk: Tollkeep) -> None:
    cid = customer(tk)
    made = tk.keys.create(cid)
    raw = made["key"]
    assert raw.startswith("tk_live_") and len(raw) >= len("tk_live_") + 43
    with tk.db.scope(write=False) as s:
        for table in ("api_keys", "customers", "operations", "journal_entries", "wallets"):
            for row in s.execute(text(f"SELECT * FROM {table}")):
                assert all(raw not in str(v) for v in row), table
                assert all(raw[len("tk_live_") + 12 :] not in str(v) for v in row), table
    assert tk.keys.authenticate(raw).customer_id == cid


def test_reuse_unless_forced(tk: Tollkeep) -> None:
    cid = customer(tk)
    first = tk.keys.create(cid)
    again = tk.keys.create(cid)
    assert again["reused"] and again["key"] is None and again["id"] == first["id"]
    forced = tk.keys.create(cid, force_new=True)
    assert forced["key"] and forced["id"] != first["id"]


def test_wrong_secret_same_prefix_rejected(tk: Tollkeep) -> None:
    raw = tk.keys.create(customer(tk))["key"]
    forged = raw[:-4] + ("AAAA" if not raw.endswith("AAAA") else "BBBB")
    with pytest.raises(AuthError):
        tk.keys.authenticate(forged)


def test_expiry_and_suspend_and_revoke(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(tk)
    k = tk.keys.create(cid, expires_at=clock.now() + timedelta(hours=1))
    assert tk.keys.authenticate(k["key"])
    tk.keys.suspend(k["id"])
    with pytest.raises(AuthError, match="suspended"):
        tk.keys.authenticate(k["key"])
    tk.keys.resume(k["id"])
    clock.advance(timedelta(hours=2))
    with pytest.raises(AuthError, match="expired"):
        tk.keys.authenticate(k["key"])
    tk.keys.revoke(k["id"])
    with pytest.raises(AuthError, match="revoked"):
        tk.keys.authenticate(k["key"])


def test_rotate_with_and_without_grace(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = customer(tk)
    old = tk.keys.create(cid, scopes=["balance:read"])
    new = tk.keys.rotate(old["id"], grace_seconds=60)
    assert new["rotated_from"] == old["id"] and new["scopes"] == ["balance:read"]
    assert tk.keys.authenticate(old["key"]) and tk.keys.authenticate(new["key"])
    clock.advance(timedelta(seconds=61))
    with pytest.raises(AuthError):
        tk.keys.authenticate(old["key"])
    newer = tk.keys.rotate(new["id"])
    with pytest.raises(AuthError):
        tk.keys.authenticate(new["key"])
    assert tk.keys.authenticate(newer["key"])


def test_ip_allowlist(tk: Tollkeep) -> None:
    k = tk.keys.create(customer(tk), ip_allowlist=["10.0.0.0/8", "2001:db8::/32"])
    assert tk.keys.authenticate(k["key"], "10.1.2.3")
    assert tk.keys.authenticate(k["key"], "2001:db8::1")
    with pytest.raises(Forbidden):
        tk.keys.authenticate(k["key"], "192.168.1.1")
    with pytest.raises(Forbidden):
        tk.keys.authenticate(k["key"], None)


def test_scopes_and_ip_over_http(client: TestClient, tk: Tollkeep) -> None:
    cid = customer(tk)
    read_only = tk.keys.create(cid, scopes=["balance:read"])["key"]
    assert client.get("/v1/balance", headers=bearer(read_only)).status_code == 200
    r = client.post(
        "/v1/usage", headers=bearer(read_only), json={"meter": "api_call", "idempotency_key": "x"}
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "insufficient_scope"
    fenced = tk.keys.create(cid, ip_allowlist=["203.0.113.0/24"], force_new=True)["key"]
    r = client.get("/v1/balance", headers=bearer(fenced))
    assert r.status_code == 403 and r.json()["error"]["code"] == "ip_not_allowed"


def test_suspended_customer_cannot_spend(client: TestClient, tk: Tollkeep) -> None:
    cid = customer(tk)
    key = tk.keys.create(cid)["key"]
    tk.ledger.grant(cid, 5, idempotency_key="g")
    assert client.patch(f"/admin/customers/{cid}", json={"status": "suspended"}).status_code == 200
    r = client.post("/v1/usage", headers=bearer(key), json={"meter": "api_call", "idempotency_key": "x"})
    assert r.status_code == 403
    assert tk.balance(cid)["balance"] == 5


def test_key_cache_is_dropped_on_revoke(tk: Tollkeep) -> None:
    tk.keys.cache_seconds = 300.0
    k = tk.keys.create(customer(tk))
    assert tk.keys.authenticate(k["key"])
    assert tk.keys.cached(k["key"]) is not None
    tk.keys.revoke(k["id"])
    with pytest.raises(AuthError):
        tk.keys.authenticate(k["key"])


def test_last_used_is_recorded(tk: Tollkeep) -> None:
    k = tk.keys.create(customer(tk))
    tk.keys.authenticate(k["key"])
    import time

    deadline = time.monotonic() + 10  # the touch is written off the request path
    while tk.keys.get(k["id"])["last_used_at"] is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert tk.keys.get(k["id"])["last_used_at"] is not None


def test_busy_key_is_refreshed_ahead_of_expiry(tk: Tollkeep) -> None:
    tk.keys.cache_seconds = 0.2
    k = tk.keys.create(customer(tk))
    rec = tk.keys.lookup(k["key"])
    assert rec is not None and not tk.keys.refresh_due(rec)
    import time

    time.sleep(0.11)
    assert tk.keys.refresh_due(rec) and not tk.keys.refresh_due(rec)  # only one refresher
    tk.keys.refresh(k["key"], rec.key_id)
    fresh = tk.keys.cached(k["key"])
    assert fresh is not None and fresh.fetched > rec.fetched


def test_rotate_grace_never_extends_a_key(tk: Tollkeep, clock: FrozenClock) -> None:
    k = tk.keys.create(customer(tk), expires_at=clock.now() + timedelta(minutes=1))
    tk.keys.rotate(k["id"], grace_seconds=30 * 86400)
    assert tk.keys.get(k["id"])["expires_at"] == (clock.now() + timedelta(minutes=1)).isoformat().replace(
        "+00:00", "Z"
    )


def test_rotating_a_suspended_key_is_refused(tk: Tollkeep) -> None:
    from tollkeep.kit.errors import Conflict

    k = tk.keys.create(customer(tk))
    tk.keys.suspend(k["id"])
    with pytest.raises(Conflict):
        tk.keys.rotate(k["id"])


def test_suspending_a_customer_drops_their_cached_keys(tk: Tollkeep) -> None:
    tk.keys.cache_seconds = 300.0
    cid = customer(tk)
    k = tk.keys.create(cid)
    assert tk.keys.authenticate(k["key"])
    tk.customers.update(cid, status="suspended")
    with pytest.raises(Forbidden):
        tk.keys.authenticate(k["key"])


def test_stale_refresh_cannot_resurrect_a_revoked_key(tk: Tollkeep) -> None:
    tk.keys.cache_seconds = 300.0
    k = tk.keys.create(customer(tk))
    handle = k["key"][: len("tk_live_") + 12]
    generation = tk.keys._generation
    stale = tk.keys._load(handle)  # a background refresh reads the row...
    tk.keys.revoke(k["id"])  # ...the key is revoked meanwhile...
    tk.keys._store(handle, stale, generation)  # ...and the refresh finishes late
    assert tk.keys.cached(k["key"]) is None
    with pytest.raises(AuthError):
        tk.keys.authenticate(k["key"])
