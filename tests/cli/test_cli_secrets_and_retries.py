"""The CLI's handling of secrets and of retries (issue #5, items 12, 14, 15, 17)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.factories import cli as run
from tollkeep.cli.main import app, env_token, secret_warnings
from tollkeep.config import Settings

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    for name in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    old = os.umask(0o022)  # a usual umask: files would be world-readable by default
    try:
        yield tmp_path
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_init_makes_env_and_database_private(workdir: Path) -> None:
    run("init")
    assert mode(workdir / ".env") == 0o600
    assert mode(workdir / "tollkeep.db") == 0o600
    run("customers", "create", "alice")  # a write: the WAL files exist now
    for suffix in ("-wal", "-shm"):
        f = workdir / f"tollkeep.db{suffix}"
        if f.exists():
            assert mode(f) == 0o600, suffix


def test_a_commented_token_is_not_a_token(workdir: Path) -> None:
    (workdir / ".env").write_text("# TOLLKEEP_ADMIN_TOKEN=changeme\nOTHER=1\n")
    out = run("init")
    assert "tka_" in out and "already has" not in out
    text = (workdir / ".env").read_text()
    token = env_token(text)
    assert token is not None and token.startswith("tka_")
    assert "OTHER=1" in text and "# TOLLKEEP_ADMIN_TOKEN=changeme" in text
    assert Settings(_env_file=".env").admin_token.get_secret_value() == token  # type: ignore[call-arg, union-attr]
    # a second init keeps it
    assert "already has an admin token" in run("init")
    assert env_token((workdir / ".env").read_text()) == token


def test_env_token_parsing() -> None:
    assert env_token("TOLLKEEP_ADMIN_TOKEN=abc\n") == "abc"
    assert env_token('export TOLLKEEP_ADMIN_TOKEN="abc"\n') == "abc"
    assert env_token("#TOLLKEEP_ADMIN_TOKEN=abc\n  # TOLLKEEP_ADMIN_TOKEN=x\n") is None
    assert env_token("TOLLKEEP_ADMIN_TOKEN=\n") is None


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_init_in_a_git_work_tree_ignores_secrets(workdir: Path) -> None:
    subprocess.run(["git", "init", "-q", str(workdir)], check=True)
    out = run("init")
    assert "added to .gitignore" in out
    for path in (".env", "tollkeep.db", "tollkeep.db-wal"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=workdir).returncode == 0, path
    before = (workdir / ".gitignore").read_text()
    run("init")
    assert (workdir / ".gitignore").read_text() == before  # nothing added twice


def test_init_outside_git_writes_no_gitignore(workdir: Path) -> None:
    if subprocess.run(["git", "rev-parse"], cwd=workdir, capture_output=True).returncode == 0:
        pytest.skip("the temporary directory is inside a git work tree")
    run("init")
    assert not (workdir / ".gitignore").exists()


def test_weak_or_readable_admin_tokens_are_warned_about(workdir: Path) -> None:
    db = f"sqlite:///{workdir / 'w.db'}"
    assert any("short" in w for w in secret_warnings(Settings(admin_token="tiny", database_url=db)))
    strong = "tka_" + "x" * 40
    env = workdir / ".env"
    env.write_text(f"TOLLKEEP_ADMIN_TOKEN={strong}\n")
    env.chmod(0o644)
    warnings = secret_warnings(Settings(admin_token=strong, database_url=db), env)
    assert any("readable by others" in w for w in warnings), warnings
    env.chmod(0o600)
    assert secret_warnings(Settings(admin_token=strong, database_url=db), env) == []


def test_init_masks_the_database_password(workdir: Path, pg_schema_url: str) -> None:
    url = pg_schema_url.replace("postgresql://postgres@", "postgresql://postgres:hunter2secret@")
    res = runner.invoke(app, ["--database", url, "init"], catch_exceptions=False, env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "postgres:***@" in res.output and "hunter2secret" not in res.output


def test_credits_grant_makes_and_prints_an_idempotency_key(workdir: Path) -> None:
    run("migrate")
    run("customers", "create", "carol")
    res = runner.invoke(app, ["credits", "grant", "carol", "5", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    key = res.stderr.split("idempotency key:")[1].split()[0]
    assert json.loads(res.stdout)["balance"] == 5
    again = json.loads(run("credits", "grant", "carol", "5", "--idempotency-key", key, "--json"))
    assert again["duplicate"] is True
    assert json.loads(run("customers", "show", "carol", "--json"))["balance"]["balance"] == 5


def test_reserved_install_prefix_and_retried_rotate(workdir: Path) -> None:
    run("migrate")
    res = runner.invoke(app, ["customers", "create", "install:abcdefgh"])
    assert res.exit_code == 2 and "reserved_external_id" in res.output
    run("customers", "create", "dave")
    run("keys", "create", "dave")
    kid = json.loads(run("keys", "list", "dave", "--json"))["data"][0]["id"]
    assert "tk_live_" in run("keys", "rotate", kid, "--grace", "60")
    res = runner.invoke(app, ["keys", "rotate", kid, "--grace", "60"])
    assert res.exit_code == 2 and "key_already_rotated" in res.output
    assert len(json.loads(run("keys", "list", "dave", "--json"))["data"]) == 2
