"""Per-key spend limits, enforced in the ledger's transaction: parallel holds and charges of one
key never pass its limit (SQLite and PostgreSQL, two runtimes on one database), open holds
count, settling counts the actual, releasing and expiring free; windows roll with the clock;
``ledger verify`` recomputes every key's spend; the admin API and the CLI set and show them."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import bearer
from tests.factories import cli, second_runtime
from tollkeep.kit.clock import FrozenClock
from tollkeep.kit.errors import InsufficientCredits
from tollkeep.ledger import KeySpendLimitExceeded, UsageRequest
from tollkeep.runtime import Tollkeep


def funded(tk: Tollkeep, credits: int = 1000, ext: str = "agent-owner") -> str:
    cid = str(tk.customers.create(ext)["id"])
    tk.ledger.grant(cid, credits, idempotency_key=f"g-{ext}")
    return cid


def agent_key(tk: Tollkeep, cid: str, **limits: Any) -> dict[str, Any]:
    return tk.keys.create(cid, force_new=True, limits=limits)


def charge(tk: Tollkeep, cid: str, key_id: str, ik: str, quantity: int = 1) -> dict[str, Any]:
    return tk.ledger.record_usage(
        UsageRequest(cid, "api_call", quantity, ik, api_key_id=key_id)  # type: ignore[arg-type]
    )


def hold(tk: Tollkeep, cid: str, key_id: str, ik: str, amount: int) -> dict[str, Any]:
    return tk.ledger.create_hold(cid, idempotency_key=ik, amount=amount, api_key_id=key_id)


def race(n: int, fn: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Run ``fn(0..n-1)`` on n threads released together; (results, errors)."""
    gate = threading.Barrier(n)

    def run(i: int) -> Any:
        gate.wait()
        return fn(i)

    ok: list[Any] = []
    errors: list[BaseException] = []
    with ThreadPoolExecutor(n) as pool:
        for f in [pool.submit(run, i) for i in range(n)]:
            try:
                ok.append(f.result())
            except BaseException as exc:  # collected: the test looks at every one
                errors.append(exc)
    return ok, errors


def spend(tk: Tollkeep, key_id: str) -> dict[str, dict[str, int]]:
    return tk.ledger.key_spend(key_id)


# ---- the limit holds under parallel holds and charges -------------------------------------------
def test_parallel_holds_never_pass_the_total_limit(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=10)
    ok, errors = race(16, lambda i: hold(tk, cid, k["id"], f"h{i}", 3))
    assert len(ok) == 3  # 3 x 3 = 9 <= 10; a 4th would make 12
    assert all(isinstance(e, KeySpendLimitExceeded) and e.code == "key_spend_limit" for e in errors)
    assert isinstance(errors[0], KeySpendLimitExceeded) and errors[0].status == 402
    assert spend(tk, k["id"])["total"] == {"spent": 0, "held": 9}
    assert tk.balance(cid)["balance"] == 1000 - 9  # nothing charged by the refused ones
    # settling for less frees the rest; releasing frees all
    tk.ledger.resolve_hold(cid, ok[0]["id"], action="settle", amount=1)
    tk.ledger.resolve_hold(cid, ok[1]["id"], action="release")
    assert spend(tk, k["id"])["total"] == {"spent": 1, "held": 3}
    hold(tk, cid, k["id"], "after", 6)  # 1 + 3 + 6 = 10
    with pytest.raises(KeySpendLimitExceeded) as refused:
        hold(tk, cid, k["id"], "one-more", 1)
    assert refused.value.details["remaining"] == 0 and refused.value.details["window"] == "total"


def test_parallel_charges_never_pass_the_daily_limit(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit_daily=7)
    ok, errors = race(20, lambda i: charge(tk, cid, k["id"], f"u{i}"))
    assert len(ok) == 7 and len(errors) == 13
    assert all(e.code == "key_spend_limit" for e in errors)  # type: ignore[attr-defined]
    assert spend(tk, k["id"])["day"] == {"spent": 7, "held": 0}
    assert tk.balance(cid)["balance"] == 993
    # the customer's other key is not bound by this one's limit
    other = tk.keys.create(cid, force_new=True)
    charge(tk, cid, other["id"], "other-key")


def test_two_runtimes_on_one_database_share_the_limit(tk: Tollkeep, db_url: str, clock: FrozenClock) -> None:
    """Two servers (own pools, writer lanes) charging one key: the limit is the database's."""
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=9)
    with second_runtime(db_url, clock) as other:
        runtimes = (tk, other)
        ok, errors = race(
            24,
            lambda i: (
                hold(runtimes[i % 2], cid, k["id"], f"h{i}", 2)
                if i % 3 == 0
                else charge(runtimes[i % 2], cid, k["id"], f"u{i}")
            ),
        )
    assert all(isinstance(e, KeySpendLimitExceeded) for e in errors), errors
    used = spend(tk, k["id"])["total"]
    assert used["spent"] + used["held"] <= 9
    assert used["spent"] + used["held"] == sum(r.get("charged", r.get("amount", 0)) for r in ok)
    assert tk.balance(cid)["balance"] == 1000 - used["spent"] - used["held"]


def test_wallet_and_key_limits_both_apply(tk: Tollkeep) -> None:
    cid = funded(tk, credits=3)
    k = agent_key(tk, cid, spend_limit=100)
    for i in range(3):
        charge(tk, cid, k["id"], f"u{i}")
    with pytest.raises(InsufficientCredits) as exc:
        charge(tk, cid, k["id"], "u3")
    assert exc.value.code == "insufficient_credits"  # the wallet, not the key
    assert spend(tk, k["id"])["total"]["spent"] == 3


# ---- holds: settle counts the actual, on the hold's day --------------------------------------------
def test_settling_above_the_hold_is_checked_and_below_never_refused(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=10)
    h = hold(tk, cid, k["id"], "h", 8)
    with pytest.raises(KeySpendLimitExceeded):
        tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=11)  # 3 more than held: 11 > 10
    assert tk.hold(cid, h["id"])["status"] == "open"  # nothing changed
    tk.keys.update(k["id"], spend_limit=2)  # lowered below what is held
    out = tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=8)  # reserved: never refused
    assert out["charged"] == 8
    assert spend(tk, k["id"])["total"] == {"spent": 8, "held": 0}
    charge(tk, cid, k["id"], "free", quantity=0)  # nothing more is always admitted
    with pytest.raises(KeySpendLimitExceeded):
        charge(tk, cid, k["id"], "more")


def test_expired_hold_frees_the_key(tk: Tollkeep, clock: FrozenClock) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=5)
    tk.ledger.create_hold(cid, idempotency_key="h", amount=5, api_key_id=k["id"], ttl_seconds=60)
    with pytest.raises(KeySpendLimitExceeded):
        charge(tk, cid, k["id"], "u")
    clock.advance(timedelta(seconds=61))
    assert tk.ledger.sweep()["holds_released"] == 1
    assert spend(tk, k["id"])["total"] == {"spent": 0, "held": 0}
    charge(tk, cid, k["id"], "u")


# ---- windows roll with the clock ---------------------------------------------------------------------
def test_daily_and_monthly_windows_roll(tk: Tollkeep, clock: FrozenClock) -> None:
    clock.set(clock.now().replace(year=2031, month=3, day=30, hour=22))
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit_daily=2, spend_limit_monthly=3)
    charge(tk, cid, k["id"], "d1-a")
    h = tk.ledger.create_hold(
        cid, idempotency_key="d1-hold", amount=1, api_key_id=k["id"], ttl_seconds=86_400
    )
    with pytest.raises(KeySpendLimitExceeded) as exc:
        charge(tk, cid, k["id"], "d1-b")
    assert exc.value.details["window"] == "daily"
    clock.advance(timedelta(hours=2))  # 31 March: a new day, the same month
    tk.ledger.resolve_hold(cid, h["id"], action="settle", amount=1)  # opened on day 1: day 1's
    assert spend(tk, k["id"])["day"] == {"spent": 0, "held": 0}
    charge(tk, cid, k["id"], "d2-a")  # month: 3 of 3
    with pytest.raises(KeySpendLimitExceeded) as exc:
        charge(tk, cid, k["id"], "d2-b")
    assert exc.value.details["window"] == "monthly"
    clock.advance(timedelta(days=1))  # 1 April: a new month
    charge(tk, cid, k["id"], "m2-a")
    assert spend(tk, k["id"])["month"] == {"spent": 1, "held": 0}
    assert spend(tk, k["id"])["total"] == {"spent": 4, "held": 0}


def test_a_replay_is_not_counted_twice(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=1)
    charge(tk, cid, k["id"], "same")
    assert charge(tk, cid, k["id"], "same")["duplicate"] is True
    assert spend(tk, k["id"])["total"]["spent"] == 1


# ---- ledger verify recomputes key spend ------------------------------------------------------------
def test_verify_finds_a_key_spend_row_that_disagrees(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=50)
    charge(tk, cid, k["id"], "u")
    hold(tk, cid, k["id"], "h", 4)
    assert tk.verify().ok
    with tk.db.scope() as s:
        s.execute(text("UPDATE key_spend SET spent = spent - 1"))
    report = tk.verify()
    assert not report.ok
    assert any("key_spend says spent 0, held 4" in p for p in report.problems), report.problems
    with tk.db.scope() as s:
        s.execute(text("UPDATE key_spend SET spent = spent + 1"))
    assert tk.verify().ok


# ---- admin API, public API, CLI ----------------------------------------------------------------------
def test_admin_api_sets_shows_and_clears_limits(client: TestClient, tk: Tollkeep) -> None:
    cid = funded(tk)
    r = client.post(
        f"/admin/customers/{cid}/keys",
        json={"spend_limit": 3, "spend_limit_daily": 2, "tools": ["weather/*"], "rate_limit": "60/minute"},
    )
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["spend_limit"] == 3 and made["tools"] == ["weather/*"] and made["max_concurrency"] is None
    key, kid = made["key"], made["id"]
    body = {"meter": "api_call", "idempotency_key": "a"}
    assert client.post("/v1/usage", json=body, headers=bearer(key)).status_code == 200
    assert (
        client.post("/v1/usage", json={**body, "idempotency_key": "b"}, headers=bearer(key)).status_code
        == 200
    )
    r = client.post("/v1/usage", json={**body, "idempotency_key": "c"}, headers=bearer(key))
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["code"] == "key_spend_limit" and err["window"] == "daily" and "topup" not in err
    got = client.get(f"/admin/keys/{kid}").json()
    assert got["spend"]["day"] == {"spent": 2, "held": 0} and got["spend_limit_daily"] == 2
    r = client.patch(f"/admin/keys/{kid}", json={"spend_limit_daily": None, "max_concurrency": 4})
    assert r.status_code == 200 and r.json()["spend_limit_daily"] is None and r.json()["spend_limit"] == 3
    assert (
        client.post("/v1/usage", json={**body, "idempotency_key": "c"}, headers=bearer(key)).status_code
        == 200
    )
    for bad in ({"spend_limit": -1}, {"rate_limit": "lots"}, {"max_concurrency": 0}, {"tools": "x"}):
        r = client.patch(f"/admin/keys/{kid}", json=bad)
        assert r.status_code == 422, (bad, r.text)
    assert tk.balance(cid)["balance"] == 997


def test_server_key_verify_charge_reports_the_key_limit(client: TestClient, tk: Tollkeep) -> None:
    cid = funded(tk)
    key = client.post(f"/admin/customers/{cid}/keys", json={"spend_limit": 0}).json()["key"]
    sk = client.post("/admin/server-keys", json={"name": "backend"}).json()["key"]
    r = client.post(
        "/v1/keys/verify",
        json={"key": key, "charge": {"meter": "api_call", "idempotency_key": "v1"}},
        headers=bearer(sk),
    )
    assert r.status_code == 200, r.text
    assert r.json()["valid"] is False and r.json()["code"] == "key_spend_limit" and r.json()["charged"] == 0


def test_limits_given_on_create_always_make_a_new_key(tk: Tollkeep) -> None:
    cid = funded(tk)
    first = tk.keys.create(cid)
    limited = tk.keys.create(cid, limits={"spend_limit": 5})
    assert limited["id"] != first["id"] and limited["spend_limit"] == 5 and limited["key"]


def test_rotation_keeps_the_limits(tk: Tollkeep) -> None:
    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=5, tools=["a/*"], max_concurrency=2)
    new = tk.keys.rotate(k["id"])
    assert (new["spend_limit"], new["tools"], new["max_concurrency"]) == (5, ["a/*"], 2)


def test_cli_sets_and_shows_limits(tk: Tollkeep, db_url: str) -> None:
    funded(tk, ext="cli-owner")
    out = cli(
        "--database",
        db_url,
        "keys",
        "create",
        "cli-owner",
        "--new",
        "--spend-limit",
        "5",
        "--spend-limit-daily",
        "2",
        "--tool",
        "weather/*",
        "--rate-limit",
        "10/minute",
        "--json",
    )
    made = json.loads(out)
    assert made["spend_limit"] == 5 and made["tools"] == ["weather/*"] and made["key"]
    shown = json.loads(
        cli(
            "--database",
            db_url,
            "keys",
            "limits",
            made["id"],
            "--clear",
            "spend_limit_daily",
            "--max-concurrency",
            "3",
            "--json",
        )
    )
    assert shown["spend_limit_daily"] is None and shown["max_concurrency"] == 3
    assert shown["spend"]["total"] == {"spent": 0, "held": 0}


def test_migration_0010_counts_existing_charges(tk: Tollkeep) -> None:
    """A database with key charges and holds from before 0010: going down to 0009 and up again
    rebuilds ``key_spend`` (and the holds' key) from the operations, and verify agrees."""
    from alembic import command

    from tollkeep.kit.migrate import alembic_config, upgrade

    cid = funded(tk)
    k = agent_key(tk, cid, spend_limit=100)
    charge(tk, cid, k["id"], "u1", quantity=2)
    h1 = hold(tk, cid, k["id"], "h1", 5)
    h2 = hold(tk, cid, k["id"], "h2", 4)
    hold(tk, cid, k["id"], "h3", 3)
    tk.ledger.resolve_hold(cid, h1["id"], action="settle", amount=2)
    tk.ledger.resolve_hold(cid, h2["id"], action="release")
    before = spend(tk, k["id"])
    assert before["total"] == {"spent": 4, "held": 3}
    cfg = alembic_config()
    with tk.db.engine.connect() as conn, conn.begin():
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
    upgrade(tk.db)
    assert spend(tk, k["id"]) == before
    tk.keys.update(k["id"], spend_limit=7)  # (going down dropped the limit columns)
    with pytest.raises(KeySpendLimitExceeded):  # 4 spent + 3 held + 1 > 7: the rebuilt rows count
        hold(tk, cid, k["id"], "h4", 1)


def test_server_key_charges_are_not_counted_per_key(client: TestClient, tk: Tollkeep) -> None:
    """A server key acts for many customers: its charges and holds are not a key's spend (one
    row shared by all its customers would serialize their charges)."""
    sk = client.post("/admin/server-keys", json={"name": "backend"}).json()["key"]
    for ext in ("srv-a", "srv-b"):
        cid = funded(tk, ext=ext)
        body = {"meter": "api_call", "idempotency_key": f"s-{ext}", "customer_id": cid}
        assert client.post("/v1/usage", json=body, headers=bearer(sk)).status_code == 200
        r = client.post(
            "/v1/holds",
            json={"amount": 3, "idempotency_key": f"h-{ext}", "customer_id": cid},
            headers=bearer(sk),
        )
        assert r.status_code == 201, r.text
        client.post(f"/v1/holds/{r.json()['id']}/settle", json={"amount": 2}, headers=bearer(sk))
    with tk.db.scope(write=False) as s:
        assert s.execute(text("SELECT count(*) FROM key_spend")).scalar_one() == 0
        assert s.execute(text("SELECT count(*) FROM holds WHERE api_key_id IS NOT NULL")).scalar_one() == 0
