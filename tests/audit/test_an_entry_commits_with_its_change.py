"""An audit entry is written in the unit of work of the change it describes: if that fails,
both are gone. Calls without an actor (the system's own: an anonymous install id's allowance,
the background jobs, a buyer's charges) write none."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings
from tests.factories import anonymous_catalog
from tollkeep import audit
from tollkeep.app import create_app
from tollkeep.kit.actor import Actor
from tollkeep.kit.clock import FrozenClock
from tollkeep.runtime import Tollkeep

OPS = Actor("admin", "adm_test", "admin", address="10.0.0.1")


def failing_after(monkeypatch: pytest.MonkeyPatch, module: Any) -> None:
    """Make ``module``'s ``record`` write the entry, then fail the unit of work."""

    def record_then_fail(*args: Any, **kw: Any) -> None:
        audit.record(*args, **kw)
        raise RuntimeError("the disk is full")

    monkeypatch.setattr(module, "record", record_then_fail)


def test_a_grant_that_does_not_commit_leaves_no_entry(
    tk: Tollkeep, monkeypatch: pytest.MonkeyPatch, dump: Callable[[], tuple[int, str]]
) -> None:
    import tollkeep.ledger.grants as grants

    cid = tk.customers.create("atomic")["id"]
    failing_after(monkeypatch, grants)
    with pytest.raises(RuntimeError):
        tk.ledger.grant(cid, 5, idempotency_key="g", actor=OPS)
    assert dump()[0] == 0 and tk.balance(cid)["balance"] == 0
    monkeypatch.undo()
    out = tk.ledger.grant(cid, 5, idempotency_key="g", actor=OPS)
    assert out["duplicate"] is False and out["balance"] == 5  # the first attempt left nothing
    [e] = tk_entries(tk)
    assert e["action"] == "grant.create" and e["actor"] == {"kind": "admin", "id": "adm_test"}
    assert e["address"] == "10.0.0.1"


def test_a_key_that_does_not_commit_leaves_no_entry(
    tk: Tollkeep, monkeypatch: pytest.MonkeyPatch, dump: Callable[[], tuple[int, str]]
) -> None:
    import tollkeep.keys.service as keys

    cid = tk.customers.create("atomic-key")["id"]
    failing_after(monkeypatch, keys)
    with pytest.raises(RuntimeError):
        tk.keys.create(cid, actor=OPS)
    assert dump()[0] == 0 and tk.keys.list(customer_id=cid) == []


def tk_entries(tk: Tollkeep) -> list[dict[str, Any]]:
    with tk.db.scope(write=False) as s:
        data: list[dict[str, Any]] = audit.entries(s, limit=500)["data"]
    return data


def test_calls_without_an_actor_write_nothing(tk: Tollkeep) -> None:
    cid = tk.customers.create("internal")["id"]
    tk.ledger.grant(cid, 5)
    tk.ledger.set_overdraft(cid, 3)
    k = tk.keys.create(cid)
    tk.keys.update(k["id"], name="x")
    tk.keys.suspend(k["id"])
    tk.keys.rotate(tk.keys.resume(k["id"])["id"])
    tk.ledger.sweep()
    assert tk_entries(tk) == []


def test_anonymous_allowances_and_buyers_charges_are_not_admin_actions(
    db_url: str, clock: FrozenClock, tmp_path: Path
) -> None:
    settings = make_settings(db_url, catalog_path=str(anonymous_catalog(tmp_path, allowance=10)))
    with Tollkeep(settings, clock=clock) as rt, TestClient(create_app(runtime=rt)) as c:
        r = c.post(
            "/v1/usage",
            headers={"X-Install-Id": "install-0001"},
            json={"meter": "api_call", "idempotency_key": "u"},
        )
        assert r.status_code == 200, r.text
        assert r.json()["balance"] == 9  # the customer and its allowance were made, and charged
        assert tk_entries(rt) == []
