"""The CLI's admin commands are audited like the API's, under the actor ``cli:<os user>``, and
`tollkeep audit` reads the log back (a table, or `--json`, newest first)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from tests.factories import cli as run
from tollkeep.kit.actor import cli_actor


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    run("init")
    return tmp_path


def audit_log(*args: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads(run("audit", "--json", *args))["data"]
    return data


def test_cli_admin_commands_are_audited_as_the_cli(workdir: Path) -> None:
    cid = json.loads(run("customers", "create", "alice", "--json"))["id"]
    run("credits", "grant", "alice", "5", "--idempotency-key", "g1")
    run("credits", "grant", "alice", "5", "--idempotency-key", "g1")  # a replay: no entry
    run("customers", "overdraft", "alice", "10")
    made = json.loads(run("keys", "create", "alice", "--json"))
    assert json.loads(run("keys", "create", "alice", "--json"))["reused"] is True  # no entry
    run("keys", "suspend", made["id"])
    run("keys", "resume", made["id"])
    rotated = run("keys", "rotate", made["id"], "--grace", "60")
    new_key = next(word for word in rotated.split() if word.startswith("tk_live_"))
    new_id = json.loads(run("keys", "list", "alice", "--json"))["data"][-1]["id"]
    run("keys", "revoke", new_id)
    run("ledger", "sweep")  # nothing to sweep: nothing changed, no entry
    log = audit_log()
    assert [e["action"] for e in log] == [
        "key.revoke",
        "key.rotate",
        "key.resume",
        "key.suspend",
        "key.create",
        "overdraft.set",
        "grant.create",
        "customer.create",
    ]
    me = {"kind": "cli", "id": cli_actor().id}
    assert all(e["actor"] == me and e["address"] is None and e["at"] for e in log)
    grant = audit_log("--action", "grant.create")[0]
    assert grant["target"] == {"kind": "customer", "id": cid}
    assert grant["before"] == {"balance": 0} and grant["after"]["balance"] == 5
    assert [e["action"] for e in audit_log("--target", made["id"])][-1] == "key.create"
    # no plaintext key anywhere in the table
    with sqlite3.connect(workdir / "tollkeep.db") as con:
        everything = " ".join(str(v) for row in con.execute("SELECT * FROM audit_log") for v in row)
    for key in (made["key"], new_key):
        assert key not in everything and key[-30:] not in everything


def test_the_audit_command_pages_newest_first(workdir: Path) -> None:
    for name in ("a", "b", "c"):
        run("customers", "create", name)
    page = json.loads(run("audit", "--json", "--limit", "2"))
    assert (
        [e["target"]["id"] for e in page["data"]]
        == [  # newest first
            e["target"]["id"] for e in audit_log()[:2]
        ]
    )
    rest = json.loads(run("audit", "--json", "--limit", "2", "--before", str(page["next"])))
    assert len(rest["data"]) == 1 and rest["next"] is None
    table = run("audit", "--limit", "2")
    assert "customer.create" in table and f"more: --before {page['next']}" in table
