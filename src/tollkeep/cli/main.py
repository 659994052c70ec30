"""The ``tollkeep`` command line (Typer + rich). Every command works on the configured database
(TOLLKEEP_DATABASE_URL or --database; SQLite ./tollkeep.db by default)."""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tollkeep import __version__
from tollkeep.audit import cli as audit_cli
from tollkeep.catalog import DEFAULT_CATALOG_TEXT
from tollkeep.catalog import cli as catalog_cli
from tollkeep.cli import worker as worker_cli
from tollkeep.cli.common import CatalogOpt, DatabaseOpt, err, fail, options, out, runtime, settings
from tollkeep.config import Settings, masked_url, sqlite_file
from tollkeep.customers import cli as customers_cli
from tollkeep.funnel import cli as funnel_cli
from tollkeep.gateway import cli as gateway_cli
from tollkeep.keys import cli as keys_cli
from tollkeep.kit.errors import TollkeepError
from tollkeep.ledger import cli as ledger_cli
from tollkeep.licensing import cli as licensing_cli
from tollkeep.operators import cli as operators_cli
from tollkeep.payments import cli as payments_cli
from tollkeep.plans import cli as plans_cli
from tollkeep.subscriptions import cli as subscriptions_cli
from tollkeep.webhooks import cli as webhooks_cli

app = typer.Typer(
    help="tollkeep: sell access to AI tools and APIs by the call, the token or the plan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
# Each domain owns its command group; this module only collects them (and keeps the commands
# that set up and run the whole thing: init, migrate, serve, worker, demo).
for _sub, _name in (
    (customers_cli.app, "customers"),
    (keys_cli.app, "keys"),
    (ledger_cli.credits_app, "credits"),
    (ledger_cli.usage_app, "usage"),
    (ledger_cli.ledger_app, "ledger"),
    (catalog_cli.app, "catalog"),
    (operators_cli.server_keys_app, "server-keys"),
    (operators_cli.admin_tokens_app, "admin-tokens"),
    (payments_cli.inbox_app, "inbox"),
    (payments_cli.payments_app, "payments"),
    (webhooks_cli.app, "webhooks"),
    (licensing_cli.app, "licenses"),
    (gateway_cli.app, "gateway"),  # gateway mcp | gateway http (src/tollkeep/gateway/cli.py)
    (subscriptions_cli.app, "subscriptions"),
    (subscriptions_cli.invoices_app, "invoices"),
    (subscriptions_cli.codes_app, "codes"),
):
    app.add_typer(_sub, name=_name)
# commands another domain adds to the customers group
customers_cli.app.command("plan")(plans_cli.customers_plan)
customers_cli.app.command("overdraft")(ledger_cli.customers_overdraft)
MIN_TOKEN_CHARS = 32


@app.callback()
def main(
    database: DatabaseOpt = None,
    catalog: CatalogOpt = None,
    version: Annotated[bool, typer.Option("--version", help="Show the version")] = False,
) -> None:
    if version:
        out.print(f"tollkeep {__version__}")
        raise typer.Exit(0)
    options["database"] = database
    options["catalog"] = catalog


# ---- setup ------------------------------------------------------------------------------------------
_TOKEN_LINE = re.compile(r"^\s*(?:export\s+)?TOLLKEEP_ADMIN_TOKEN\s*=\s*['\"]?(\S*?)['\"]?\s*$")


def env_token(text: str) -> str | None:
    """The admin token an .env text sets (commented-out lines don't count), or None."""
    found = None
    for line in text.splitlines():
        m = _TOKEN_LINE.match(line)
        if m and m.group(1):
            found = m.group(1)
    return found


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 from the first byte (a new file renamed over
    the old one: there is never a moment when it is readable by others)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def ensure_gitignored(paths: list[str]) -> list[str]:
    """Inside a git work tree, append to ./.gitignore those of ``paths`` git would not ignore.
    Returns what was added (nothing outside a work tree or without git)."""

    def git(*args: str) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):
            return None

    inside = git("rev-parse", "--is-inside-work-tree")
    if inside is None or inside.returncode != 0 or inside.stdout.strip() != "true":
        return []
    missing = []
    for p in paths:
        r = git("check-ignore", "-q", "--", p)
        if r is not None and r.returncode == 1:  # 0: ignored; 128: an error (say nothing)
            missing.append(p)
    if missing:
        ignore = Path(".gitignore")
        before = ignore.read_text() if ignore.exists() else ""
        sep = "" if not before or before.endswith("\n") else "\n"
        lines = "".join(f"{p}\n" for p in missing)
        ignore.write_text(f"{before}{sep}# tollkeep: secrets and the database\n{lines}")
    return missing


def secret_warnings(s: Settings, env_file: Path = Path(".env")) -> list[str]:
    """Warnings about how the admin token and the SQLite file are kept."""
    warnings = []
    token = s.admin_token.get_secret_value() if s.admin_token is not None else ""
    if token and len(token) < MIN_TOKEN_CHARS:
        warnings.append(
            f"TOLLKEEP_ADMIN_TOKEN is short ({len(token)} characters): use at least {MIN_TOKEN_CHARS} "
            "random ones (`tollkeep init --force` makes one)"
        )
    if token and env_file.exists() and env_token(env_file.read_text()) == token:
        mode = env_file.stat().st_mode & 0o777
        if mode & 0o077:
            warnings.append(
                f"{env_file} holds the admin token and is readable by others: chmod 600 {env_file}"
            )
    db = sqlite_file(s.database_url)
    if db is not None and db.exists() and db.stat().st_mode & 0o077:
        warnings.append(f"the database {db} is readable by others: chmod 600 {db}*")
    return warnings


@app.command()
def init(
    path: Annotated[Path, typer.Option(help="Where to write the catalog")] = Path("tollkeep.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite existing files")] = False,
) -> None:
    """Write a commented example catalog and a .env with a fresh admin token, then migrate."""
    from tollkeep.kit.db import probe

    try:  # a database that cannot be used is said before any file is written
        probe(settings().database_url)
    except TollkeepError as exc:
        fail(exc)
    if path.exists() and not force:
        err.print(f"{path} exists (use --force to overwrite)")
    else:
        path.write_text(DEFAULT_CATALOG_TEXT)
        out.print(f"wrote [bold]{path}[/bold] (edit it: meters, prices, plans)")
    env = Path(".env")
    existing = env.read_text() if env.exists() else ""
    if env_token(existing) and not force:
        out.print(".env already has an admin token")
        if env.stat().st_mode & 0o077:
            env.chmod(0o600)
            out.print(".env was readable by others: made it 0600")
    else:
        token = "tka_" + secrets.token_urlsafe(32)
        lines = [ln for ln in existing.splitlines() if not _TOKEN_LINE.match(ln)]
        lines.append(f"TOLLKEEP_ADMIN_TOKEN={token}")
        write_private(env, "\n".join(lines) + "\n")
        out.print(f"admin token (also in .env): [bold]{token}[/bold]")
    with runtime(setup=True, catalog_path=path) as tk:
        ignore = [".env"]
        db = sqlite_file(tk.settings.database_url)
        if db is not None:
            rel = os.path.relpath(db.resolve(), Path.cwd().resolve())
            if not rel.startswith(".."):
                ignore += [rel, f"{rel}-wal", f"{rel}-shm"]
        added = ensure_gitignored(ignore)
        if added:
            out.print(f"added to .gitignore: {', '.join(added)}")
        out.print(f"database ready: {masked_url(tk.db.url)} (catalog {tk.catalog.version})")


@app.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    from tollkeep.kit.db import Database, explain_database_error
    from tollkeep.kit.migrate import upgrade

    s = settings()
    try:
        db = Database(s.database_url)
        try:
            with out.status("migrating"):
                rev = upgrade(db)
        finally:
            db.dispose()
    except Exception as exc:
        problem = explain_database_error(exc, s.database_url)
        if problem is None:
            raise
        fail(problem)
    out.print(f"schema at revision [bold]{rev}[/bold]")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (TOLLKEEP_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (TOLLKEEP_PORT)")] = None,
    database: DatabaseOpt = None,
    catalog: CatalogOpt = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request")] = False,
    forwarded_allow_ips: Annotated[
        str | None,
        typer.Option(
            "--forwarded-allow-ips",
            help="Trust X-Forwarded-For from these proxies (comma-separated, or '*'); "
            "default: none (TOLLKEEP_FORWARDED_ALLOW_IPS)",
        ),
    ] = None,
) -> None:
    """Run the HTTP API (and the background jobs, unless TOLLKEEP_RUN_WORKERS=false) in this process."""
    import uvicorn

    from tollkeep.app import create_app
    from tollkeep.cli.server import uvicorn_options
    from tollkeep.runtime import Tollkeep

    s = settings(host=host, port=port, database_url=database, catalog_path=catalog)
    if s.admin_token is None:
        err.print(
            "[yellow]TOLLKEEP_ADMIN_TOKEN is not set: the admin API is off (run `tollkeep init`)[/yellow]"
        )
    try:
        tk = Tollkeep(s)
    except TollkeepError as exc:
        fail(exc)
    for warning in secret_warnings(s):
        err.print(f"[yellow]warning: {warning}[/yellow]")
    options = uvicorn_options(s, forwarded_allow_ips)
    proxies = options["forwarded_allow_ips"] or "none"
    out.print(
        f"tollkeep {__version__} on http://{s.host}:{s.port}  database {masked_url(tk.db.url)}  "
        f"catalog {tk.catalog.version}  trusted proxies: {proxies}"
    )
    try:
        uvicorn.run(
            create_app(runtime=tk),
            log_level=log_level,
            access_log=access_log,
            timeout_graceful_shutdown=5,
            **options,
        )
    finally:
        tk.close()


# the background jobs in a process of their own (cli/worker.py)
app.command("worker")(worker_cli.worker)
app.command("audit")(audit_cli.audit)
app.command("funnel")(funnel_cli.funnel)


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port (make demo PORT=8081)", min=1, max=65535)] = 8080,
    db_file: Annotated[
        Path | None,
        typer.Option("--db-file", help="SQLite file, made anew (default: tollkeep-demo.db, or -PORT.db)"),
    ] = None,
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up and print, don't serve")] = False,
) -> None:
    """A fresh SQLite demo: catalog, a customer with credits and a key; prints curl examples and serves."""
    if db_file is None:
        db_file = Path("tollkeep-demo.db" if port == 8080 else f"tollkeep-demo-{port}.db")
    # Refuse before touching anything: a demo already serving this file (its lock is held)
    # keeps its database, and a port in use is said plainly instead of after the re-seed.
    lock = demo_lock(db_file)
    if lock is None:
        err.print(
            f"a demo is already running on {db_file}: stop it (Ctrl-C in its terminal), "
            f"or run another one with `make demo PORT={port + 1}`",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    if not no_serve and not port_free("127.0.0.1", port):
        lock.close()
        err.print(
            f"port {port} is in use (another demo or server?): run `make demo PORT={port + 1}`",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    try:
        serve_demo(db_file, port, no_serve)
    finally:
        lock.close()


def serve_demo(db_file: Path, port: int, no_serve: bool) -> None:
    """Seed a fresh demo database, print how to try it, and serve it (unless ``no_serve``)."""
    import uvicorn

    from tollkeep.app import create_app
    from tollkeep.demo import tour
    from tollkeep.demo.clock import DemoClock
    from tollkeep.runtime import Tollkeep

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    token = "tka_demo_" + secrets.token_urlsafe(16)
    s = Settings(database_url=f"sqlite:///{db_file}", admin_token=token, port=port)
    clock = DemoClock(tour.BEHIND)  # the demo's fast clock: real time once the tour is over
    tk = Tollkeep(s, clock=clock)
    with out.status("setting up demo data"):
        c = tk.customers.create("demo-user", email="demo@example.com", name="Demo User")
        tk.ledger.grant(c["id"], 1000, source="purchase", idempotency_key="demo-topup", note="demo top-up")
        tk.ledger.grant(
            c["id"],
            50,
            source="promo",
            idempotency_key="demo-promo",
            expires_at=tk.clock.now().replace(year=tk.clock.now().year + 1),
            note="welcome promo",
        )
        key = tk.keys.create(c["id"], name="demo key")["key"]
        before = tk.balance(c["id"])["balance"]
        # the purchase loop, offline: a checkout for the starter pack, paid on the local
        # provider's page, applied by the inbox like any provider's webhook
        chk = tk.payments.create_checkout(customer_id=c["id"], pack="starter", provider="local")
        tk.payments.pay_local(chk["id"])
        tk.inbox.process()
        wallet = tk.balance(c["id"])
    with out.status("renewing a subscription on the demo's fast clock"):
        base = f"http://127.0.0.1:{port}"
        toured = tour.subscription_tour(tk, clock, Path(f"{db_file}.licence"), base)
    shown = wallet["display"]
    out.print(
        "bought the starter pack through the local payment provider (development mode):\n"
        f"  checkout {chk['id']}, balance {before} -> {wallet['balance']}",
        soft_wrap=True,
    )
    print("\n".join(toured) + "\n", flush=True)  # plain: it holds lines to paste
    in_ledger = "" if tk.catalog.credits.per_credit == 1 else f" ({wallet['balance']} {wallet['unit']})"
    out.print(
        f"[bold green]tollkeep demo[/bold green]  database {db_file}  catalog {tk.catalog.version}\n"
        f"customer {c['id']} (demo-user), {shown['balance']} {shown['unit']}s{in_ledger}\n",
        soft_wrap=True,
    )
    # Plain print, never wrapped or styled: these lines are meant to be pasted into a shell.
    print(demo_examples(f"http://127.0.0.1:{port}", key, token, c["id"]), flush=True)
    if no_serve:
        tk.close()
        return
    # an MCP server and an HTTP API behind the real gateway commands, on this database
    from tollkeep.demo import gateways

    log = Path(f"{db_file}.gateways.log")
    with out.status("starting the MCP and HTTP gateways"):
        gws = gateways.start(db_file, port, log)
    if gws is None:
        err.print(f"[yellow]the demo gateways did not start (see {log}); the API is served[/yellow]")
    else:
        print(gws.examples(), flush=True)
    # uvicorn re-raises a SIGTERM after its graceful shutdown, with the handler it found: make
    # that an exit through the `finally` below, so the gateways are stopped and waited for
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(create_app(runtime=tk), host="127.0.0.1", port=port, log_level="info")
    finally:
        if gws is not None:
            gws.stop()
        tk.close()


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def demo_examples(base: str, key: str, admin_token: str, customer_id: str) -> str:
    """The demo's shell session: exports first, then curl lines using them (README uses $KEY)."""
    return f"""Try it in another terminal (paste as is):

export BASE={base}
export KEY={key}
export ADMIN={admin_token}
export CUSTOMER={customer_id}

curl -s $BASE/v1/balance -H "Authorization: Bearer $KEY"
curl -s $BASE/v1/usage -H "Authorization: Bearer $KEY" \\
  -H 'Content-Type: application/json' \\
  -d '{{"meter": "api_call", "quantity": 1, "idempotency_key": "req-1"}}'
curl -s $BASE/v1/usage -H "Authorization: Bearer $KEY"
curl -s $BASE/v1/pricing

# buy another credit pack: on the local provider, opening the "url" pays,
# then the inbox applies it (check /v1/balance again)
curl -s $BASE/v1/checkout -H "Authorization: Bearer $KEY" \\
  -H 'Content-Type: application/json' -d '{{"pack": "starter"}}'
curl -s $BASE/admin/inbox -H "Authorization: Bearer $ADMIN"
curl -s $BASE/admin/funnel -H "Authorization: Bearer $ADMIN"
curl -s $BASE/admin/customers -H "Authorization: Bearer $ADMIN"
curl -s $BASE/admin/customers/$CUSTOMER/ledger -H "Authorization: Bearer $ADMIN"

OpenAPI docs: {base}/docs
"""


def demo_lock(db_file: Path) -> Any:
    """An exclusive lock on ``<db_file>.lock`` held while the demo runs, or None if another
    demo holds it. The lock goes with the process (also on kill -9)."""
    import fcntl

    f = open(f"{db_file}.lock", "a+")  # noqa: SIM115 - held open for the demo's life
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        return None
    return f


def port_free(host: str, port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def run() -> None:  # pragma: no cover
    app(prog_name="tollkeep")
    sys.exit(0)
