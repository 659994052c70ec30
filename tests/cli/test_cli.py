"""The CLI against a real SQLite file, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories import cli as run
from tollkeep.cli.main import app

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TOLLKEEP_DATABASE_URL", raising=False)
    monkeypatch.delenv("TOLLKEEP_CATALOG_PATH", raising=False)
    monkeypatch.delenv("TOLLKEEP_ADMIN_TOKEN", raising=False)
    return tmp_path


def test_full_flow(workdir: Path) -> None:
    out = run("init")
    assert (workdir / "tollkeep.toml").exists() and "TOLLKEEP_ADMIN_TOKEN=" in (workdir / ".env").read_text()
    assert "tka_" in out
    cust = json.loads(run("customers", "create", "alice", "--email", "alice@example.com", "--json"))
    assert cust["external_id"] == "alice"
    grant = json.loads(run("credits", "grant", "alice", "5", "--idempotency-key", "g1", "--json"))
    assert grant["balance"] == 5
    again = json.loads(run("credits", "grant", "alice", "5", "--idempotency-key", "g1", "--json"))
    assert again["duplicate"] is True
    use = json.loads(run("usage", "record", "alice", "api_call", "--idempotency-key", "u1", "--json"))
    assert use["charged"] == 1 and use["balance"] == 4
    key_out = run("keys", "create", "alice")
    assert "tk_live_" in key_out
    keys = json.loads(run("keys", "list", "alice", "--json"))["data"]
    assert len(keys) == 1 and "key" not in keys[0]
    run("keys", "suspend", keys[0]["id"])
    run("keys", "resume", keys[0]["id"])
    run("keys", "revoke", keys[0]["id"])
    journal = run("ledger", "show", "alice")
    assert "debit" in journal and "+5" in journal
    assert json.loads(run("ledger", "show", "alice", "--json"))["data"][0]["delta"] == 5
    assert "overdraft_limit" in run("customers", "overdraft", "alice", "10")
    shown = json.loads(run("customers", "show", "alice", "--json"))
    assert shown["balance"]["balance"] == 4
    assert "alice" in run("customers", "list")
    assert "ledger OK" in run("ledger", "verify")
    assert json.loads(run("ledger", "verify", "--json"))["ok"] is True


def test_errors_are_clear(workdir: Path) -> None:
    run("migrate")
    res = runner.invoke(app, ["credits", "grant", "nobody", "5"])
    assert res.exit_code == 2 and "customer_not_found" in res.output
    (workdir / "bad.toml").write_text("[meters.x]\naggregation = 'median'\n")
    res = runner.invoke(app, ["catalog", "check", "bad.toml"])
    assert res.exit_code == 2 and "aggregation" in res.output
    assert "valid" in run(
        "catalog", "check", str(Path(__file__).parents[2] / "src/tollkeep/catalog/default.toml")
    )


def test_verify_fails_on_tampering(workdir: Path) -> None:
    import sqlite3

    run("migrate")
    run("customers", "create", "bob")
    run("credits", "grant", "bob", "7")
    con = sqlite3.connect(workdir / "tollkeep.db")
    con.execute("UPDATE grants SET remaining = remaining + 100")
    con.commit()
    con.close()
    res = runner.invoke(app, ["ledger", "verify"])
    assert res.exit_code == 1 and "journal sums to 7" in res.output


def test_demo_sets_up_and_prints_examples(workdir: Path) -> None:
    out = run("demo", "--no-serve", "--db-file", "demo.db")
    assert "curl" in out and "tk_live_" in out and "/v1/usage" in out
