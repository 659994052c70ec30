"""A newcomer's first hour (issue #7, items 3-6): the demo's examples paste and run, a second
demo does not wipe the first, commands that only read never create or migrate a database, and
database URL mistakes are one line saying what to fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.factories import cli as run
from tests.factories import eventually, free_port
from tollkeep.cli.main import app
from tollkeep.config import Settings
from tollkeep.runtime import Tollkeep

runner = CliRunner()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for var in ("TOLLKEEP_DATABASE_URL", "TOLLKEEP_CATALOG_PATH", "TOLLKEEP_ADMIN_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def start_demo(
    tmp: Path, port: int, *extra: str, gateways: bool = False
) -> tuple[subprocess.Popen[str], str]:
    """``tollkeep demo`` as a user runs it, in an 80-column terminal; returns it and what it
    printed up to the docs line (``gateways``: up to the end of the gateways' block), once it
    serves."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLKEEP_")} | {"COLUMNS": "80"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tollkeep", "demo", "--port", str(port), *extra],
        cwd=tmp,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("OpenAPI docs"):
            break
    if gateways:  # and the gateways' block, printed once they listen
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("curl -s $BASE/v1/balance") and "export API=" in "".join(lines):
                break
    deadline = time.monotonic() + 90  # the gateways start first: slow on a busy machine
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc, "".join(lines)


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def test_the_demo_examples_paste_into_a_shell_and_work(tmp_path: Path) -> None:
    port = free_port()
    proc, printed = start_demo(tmp_path, port)
    try:
        assert all(len(line) <= 80 for line in printed.splitlines()), printed
        session = printed[printed.index("export BASE=") : printed.index("OpenAPI docs")]
        # the pasted block, as a shell would run it: each curl's output on its own line
        script = session.replace("\ncurl", "\necho; curl")
        done = subprocess.run(["bash", "-ec", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        outputs = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        balance, charge, usage, pricing, checkout, inbox, funnel, customers, ledger = outputs
        # 1000 + 50 promo seeded, then the starter pack bought through the local provider
        assert balance["balance"] == 2050
        assert charge["charged"] == 1 and charge["balance"] == 2049
        assert usage["data"][0]["event_id"] == charge["event_id"]
        assert pricing["meters"]
        assert pricing["packs"] and checkout["url"].startswith("http://127.0.0.1")
        assert [e["status"] for e in inbox["data"]] == ["processed"]
        assert funnel["stages"]["paid"] == 1
        assert customers["data"][0]["external_id"] == "demo-user"
        assert len(ledger["data"]) == 4  # three grants and the charge
    finally:
        stop(proc)


def test_the_demo_renews_a_subscription_and_verifies_its_licence_offline(tmp_path: Path) -> None:
    """On the demo's fast clock: subscribed, invoice pending, paid, renewed with the new cycle's
    allowance, the licence extended under the same id; the lines it prints to check the key
    offline (JWKS, then `tollkeep licenses verify`) paste and work."""
    port = free_port()
    proc, printed = start_demo(tmp_path, port)
    try:
        tour = printed[printed.index("a subscription renewing") : printed.index("tollkeep demo  database")]
        assert all(len(line) <= 80 for line in tour.splitlines()), tour
        for says in (
            "demo-subscriber subscribes to pro, cycle 1 until",
            "the period ends: renewal invoice pending, 27.00 EUR",
            "invoice paid: renewed, cycle 2 until",
            "allowance for cycle 2: 10000 credits granted",
            "(same id), plan pro, version 2",
        ):
            assert says in tour, tour
        lid = tour.split("licence ")[1].split()[0]
        assert f"{lid} (same id)" in tour
        before, arrow, after = tour.split("    expires ")[1].split()[:3]
        assert arrow == "->"
        assert after > before  # the renewal moved the licence's expiry
        check = tour[tour.index("    curl -s") :].replace(
            "tollkeep licenses", f"{sys.executable} -m tollkeep licenses"
        )
        done = subprocess.run(
            ["bash", "-ec", check.rstrip() + " --json"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        claims = json.loads(done.stdout)
        assert (claims["valid"], claims["lid"], claims["plan"], claims["ver"]) == (True, lid, "pro", 2)
        assert (tmp_path / "jwks.json").exists()
        # and the server agrees: one subscription, active in its second cycle, one licence
        with Tollkeep(Settings(database_url=f"sqlite:///{tmp_path / f'tollkeep-demo-{port}.db'}")) as tk:
            subs = tk.subscriptions.list_subscriptions()
            assert [(s["status"], s["cycle"]) for s in subs] == [("active", 2)]
            assert [x["id"] for x in tk.licenses.list()] == [lid]
    finally:
        stop(proc)


def test_the_demo_shows_an_mcp_server_and_an_http_api_behind_the_gateways(tmp_path: Path) -> None:
    port = free_port()
    proc, printed = start_demo(tmp_path, port, gateways=True)
    try:
        assert all(len(line) <= 80 for line in printed.splitlines()), printed
        exports = printed[printed.index("export BASE=") : printed.index("\ncurl")]
        block = printed[printed.index("export MCP=") :]
        done = subprocess.run(
            ["bash", "-ec", exports + "\n" + block.replace("\ncurl", "\necho; curl")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        quote, called, balance = (json.loads(line) for line in done.stdout.splitlines() if line.strip())
        # the seller's API got its own credential, never the buyer's key
        assert quote["quote"] and quote["upstream_auth"] == "the-sellers-own-secret"
        assert called["result"]["structuredContent"]["city"] == "Paris"
        assert called["result"]["_meta"]["tollkeep/charge"] == {"charged": 2, "balance": 2047}
        assert balance["balance"] == 2050 - 1 - 2
    finally:
        stop(proc)
    # the gateways went with the demo, and the ledger they wrote to agrees with itself
    with Tollkeep(Settings(database_url=f"sqlite:///{tmp_path / f'tollkeep-demo-{port}.db'}")) as tk:
        assert tk.verify().ok
    for p in (port + 100, port + 101, port + 102):

        def closed(p: int = p) -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", p)) != 0

        assert eventually(closed, timeout=20), f"port {p} still served"


def test_a_second_demo_refuses_and_keeps_the_first_ones_database(tmp_path: Path) -> None:
    port = free_port()
    proc, printed = start_demo(tmp_path, port)
    try:
        key = printed.split("export KEY=")[1].split()[0]
        second = subprocess.run(
            [sys.executable, "-m", "tollkeep", "demo", "--port", str(port)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 1
        assert "already running" in second.stderr and "PORT=" in second.stderr
        # the first demo still serves its data
        r = httpx.get(f"http://127.0.0.1:{port}/v1/balance", headers={"Authorization": f"Bearer {key}"})
        assert r.status_code == 200 and r.json()["balance"] == 2050
        # another port is another demo, with a database of its own
        other = free_port()
        proc2, printed2 = start_demo(tmp_path, other)
        try:
            assert f"tollkeep-demo-{other}.db" in printed2
            key2 = printed2.split("export KEY=")[1].split()[0]
            r = httpx.get(f"http://127.0.0.1:{other}/v1/balance", headers={"Authorization": f"Bearer {key2}"})
            assert r.status_code == 200
        finally:
            stop(proc2)
    finally:
        stop(proc)


def test_a_demo_on_a_busy_port_says_so_before_touching_anything(workdir: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = runner.invoke(app, ["demo", "--port", str(port)])
    assert res.exit_code == 1 and f"port {port} is in use" in res.output
    assert not (workdir / f"tollkeep-demo-{port}.db").exists()


@pytest.mark.parametrize(
    "command",
    [["customers", "list"], ["ledger", "verify"], ["keys", "list"], ["credits", "grant", "alice", "5"]],
)
def test_commands_that_use_a_database_never_create_one(workdir: Path, command: list[str]) -> None:
    res = runner.invoke(app, command, env={"COLUMNS": "60"})
    assert res.exit_code == 2
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1, res.output
    assert "database_missing" in lines[0] and str(workdir) in lines[0] and "tollkeep init" in lines[0]
    assert not list(workdir.iterdir()), "nothing may be created"


def test_commands_never_migrate_a_postgres_database(workdir: Path, pg_schema_url: str) -> None:
    import sqlalchemy as sa

    res = runner.invoke(app, ["--database", pg_schema_url, "customers", "list"])
    assert res.exit_code == 2 and "database_not_migrated" in res.output and "tollkeep migrate" in res.output
    engine = sa.create_engine(pg_schema_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
    run("--database", pg_schema_url, "migrate")
    assert "ledger OK" in run("--database", pg_schema_url, "ledger", "verify")


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("sqlite:///no/such/folder/x.db", "folder"),
        ("sqlite://tollkeep.db", "sqlite:///tollkeep.db"),
        ("not a url at all", "not a URL"),
        ("mysql://user@localhost/db", "SQLite or PostgreSQL"),
        ("postgresql+asyncpg://user@localhost/db", "SQLite or PostgreSQL"),
        ("postgresql://postgres@127.0.0.1:1/test", "is PostgreSQL running"),
        ("postgresql://no_such_role_tk@127.0.0.1:5432/test", 'role "no_such_role_tk" does not exist'),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db_tk", 'database "no_such_db_tk" does not exist'),
    ],
)
@pytest.mark.parametrize("command", [["migrate"], ["customers", "list"], ["init"]])
def test_database_url_mistakes_are_one_line(workdir: Path, url: str, says: str, command: list[str]) -> None:
    if "5432" in url:
        import socket

        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex(("127.0.0.1", 5432)) != 0:
                pytest.skip("PostgreSQL does not answer on 127.0.0.1:5432")
    res = runner.invoke(app, ["--database", url, *command], env={"COLUMNS": "60"})
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [line for line in res.output.splitlines() if line.strip() and "admin token" not in line]
    assert len(lines) == 1 and says in lines[0], res.output


def test_the_cli_validates_amounts_like_the_api(workdir: Path) -> None:
    run("migrate")
    run("customers", "create", "alice")
    res = runner.invoke(app, ["credits", "grant", "alice", str(10**19), "--idempotency-key", "g"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "1000000000000000" in res.output  # the bound, as the API's 422 states it
    assert json.loads(run("customers", "show", "alice", "--json"))["balance"]["balance"] == 0


def test_lists_show_whole_ids_and_share_one_json_shape(workdir: Path) -> None:
    run("migrate")
    cust = json.loads(run("customers", "create", "a-customer-with-a-long-external-id", "--json"))
    run("keys", "create", cust["id"])
    run("credits", "grant", cust["id"], "5", "--idempotency-key", "g1")
    narrow = {"COLUMNS": "60"}
    key_id = json.loads(run("keys", "list", "--json"))["data"][0]["id"]
    for command, whole in (
        (["keys", "list"], [key_id, cust["id"]]),
        (["customers", "list"], [cust["id"], cust["external_id"]]),
        (["ledger", "show", cust["id"]], []),
    ):
        res = runner.invoke(app, command, env=narrow)
        assert res.exit_code == 0, res.output
        for ident in whole:
            assert ident in res.output, (command, ident, res.output)
        shape = json.loads(runner.invoke(app, [*command, "--json"]).output)
        assert set(shape) >= {"data", "next"}, command


def test_customers_show_renders_the_balance_as_a_table(workdir: Path) -> None:
    run("migrate")
    run("customers", "create", "alice")
    run("credits", "grant", "alice", "7", "--idempotency-key", "g1")
    out = runner.invoke(app, ["customers", "show", "alice"], env={"COLUMNS": "120"}).output
    assert "balance 7 credit" in out and "purchase" in out and '"grants"' not in out
