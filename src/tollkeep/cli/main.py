"""The ``tollkeep`` command line (Typer + rich). Every command works on the configured database
(TOLLKEEP_DATABASE_URL or --database; SQLite ./tollkeep.db by default)."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tollkeep import __version__
from tollkeep.catalog import DEFAULT_CATALOG_TEXT, CatalogError, load_catalog
from tollkeep.config import Settings, masked_url, sqlite_file
from tollkeep.kit.errors import TollkeepError

app = typer.Typer(
    help="tollkeep: sell access to AI tools and APIs by the call, the token or the plan.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
customers_app = typer.Typer(help="Customers.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
credits_app = typer.Typer(help="Credits.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)
catalog_app = typer.Typer(help="The catalog (meters, prices, plans).", no_args_is_help=True)
for sub, name in (
    (customers_app, "customers"),
    (keys_app, "keys"),
    (credits_app, "credits"),
    (usage_app, "usage"),
    (ledger_app, "ledger"),
    (catalog_app, "catalog"),
):
    app.add_typer(sub, name=name)

out = Console()
err = Console(stderr=True)
_opts: dict[str, Any] = {}

DatabaseOpt = Annotated[
    str | None, typer.Option("--database", "-d", help="Database URL (TOLLKEEP_DATABASE_URL)")
]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", "-c", help="Catalog TOML (TOLLKEEP_CATALOG_PATH)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]
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
    _opts["database"] = database
    _opts["catalog"] = catalog


def settings(**overrides: Any) -> Settings:
    kw: dict[str, Any] = {}
    if _opts.get("database"):
        kw["database_url"] = _opts["database"]
    if _opts.get("catalog"):
        kw["catalog_path"] = _opts["catalog"]
    elif not os.environ.get("TOLLKEEP_CATALOG_PATH") and Path("tollkeep.toml").exists():
        kw["catalog_path"] = Path("tollkeep.toml")
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(_env_file=".env", **kw)


@contextmanager
def runtime(**overrides: Any) -> Any:
    from tollkeep.runtime import Tollkeep

    try:
        tk = Tollkeep(settings(**overrides))
    except TollkeepError as exc:
        fail(exc)
    try:
        yield tk
    except TollkeepError as exc:
        fail(exc)
    finally:
        tk.close()


def fail(exc: TollkeepError) -> None:
    err.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {exc.message}")
    for issue in exc.details.get("issues", []):
        err.print(f"  {issue.get('file') or ''} {issue.get('key')}: {issue.get('reason')}")
    raise typer.Exit(2)


def show(data: Any, as_json: bool) -> None:
    if as_json or not isinstance(data, dict):
        out.print_json(json.dumps(data, default=str))
        return
    t = Table(show_header=False, box=None)
    for k, v in data.items():
        t.add_row(f"[bold]{k}[/bold]", json.dumps(v, default=str) if isinstance(v, dict | list) else str(v))
    out.print(t)


def _when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 timestamp") from None
    if dt.tzinfo is None:
        raise typer.BadParameter("give a timezone, e.g. 2026-12-31T00:00:00Z")
    return dt


def _decimal(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a number") from None


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
    with runtime(catalog_path=path) as tk:
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
    from tollkeep.kit.db import Database
    from tollkeep.kit.migrate import upgrade

    s = settings()
    db = Database(s.database_url)
    with out.status("migrating"):
        rev = upgrade(db)
    db.dispose()
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
    """Run the HTTP API (and the sweeper) in this process."""
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


@app.command()
def demo(
    port: Annotated[int, typer.Option(help="Port")] = 8080,
    db_file: Annotated[Path, typer.Option("--db-file", help="SQLite file (made anew)")] = Path(
        "tollkeep-demo.db"
    ),
    no_serve: Annotated[bool, typer.Option("--no-serve", help="Set up and print, don't serve")] = False,
) -> None:
    """A fresh SQLite demo: catalog, a customer with credits and a key; prints curl examples and serves."""
    import uvicorn

    from tollkeep.app import create_app
    from tollkeep.runtime import Tollkeep

    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_file}{suffix}").unlink(missing_ok=True)
    token = "tka_demo_" + secrets.token_urlsafe(16)
    s = Settings(database_url=f"sqlite:///{db_file}", admin_token=token, port=port)
    tk = Tollkeep(s)
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
    base = f"http://127.0.0.1:{port}"
    out.print(f"""
[bold green]tollkeep demo[/bold green]  database {db_file}  catalog {tk.catalog.version}

customer  {c["id"]} (demo-user), 1050 credits
API key   [bold]{key}[/bold]
admin     [bold]{token}[/bold]

Try it (in another terminal):

  curl -s {base}/v1/balance -H 'Authorization: Bearer {key}'
  curl -s {base}/v1/usage -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"meter": "api_call", "quantity": 1, "idempotency_key": "req-1"}}'
  curl -s {base}/v1/usage -H 'Authorization: Bearer {key}'
  curl -s {base}/v1/pricing
  curl -s {base}/admin/customers -H 'Authorization: Bearer {token}'
  curl -s {base}/admin/customers/{c["id"]}/ledger -H 'Authorization: Bearer {token}'

OpenAPI docs: {base}/docs
""")
    if no_serve:
        tk.close()
        return
    try:
        uvicorn.run(create_app(runtime=tk), host="127.0.0.1", port=port, log_level="info")
    finally:
        tk.close()


# ---- customers -------------------------------------------------------------------------------------
@customers_app.command("create")
def customers_create(
    external_id: str,
    email: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option()] = None,
    plan: Annotated[str | None, typer.Option(help="Plan key from the catalog")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a customer."""
    with runtime() as tk:
        show(tk.customers.create(external_id, email=email, name=name, plan=plan), as_json)


@customers_app.command("list")
def customers_list(
    limit: Annotated[int, typer.Option()] = 50,
    q: Annotated[str | None, typer.Option(help="Search external id / email")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List customers."""
    with runtime() as tk:
        page = tk.customers.list(limit=limit, q=q)
    if as_json:
        show(page, True)
        return
    t = Table("id", "external_id", "email", "plan", "status", "created")
    for c in page["data"]:
        t.add_row(c["id"], c["external_id"], c["email"] or "", c["plan"] or "", c["status"], c["created_at"])
    out.print(t)


@customers_app.command("show")
def customers_show(
    ref: Annotated[str, typer.Argument(help="Customer id or external id")], as_json: JsonOpt = False
) -> None:
    """A customer with balance and grants."""
    with runtime() as tk:
        c = tk.customers.find(ref)
        show({**c, "balance": tk.balance(c["id"])}, as_json)


@customers_app.command("plan")
def customers_plan(ref: str, plan: Annotated[str, typer.Argument(help="Plan key, or 'none'")]) -> None:
    """Move a customer to another plan."""
    with runtime() as tk:
        c = tk.customers.find(ref)
        show(tk.ledger.change_plan(c["id"], None if plan == "none" else plan), False)


# ---- keys ------------------------------------------------------------------------------------------
@keys_app.command("create")
def keys_create(
    customer: Annotated[str, typer.Argument(help="Customer id or external id")],
    name: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[list[str] | None, typer.Option(help="Repeat for several scopes (default: all)")] = None,
    allow_ip: Annotated[
        list[str] | None, typer.Option(help="CIDR allowed to use the key (repeatable)")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="ISO 8601 expiry")] = None,
    new: Annotated[bool, typer.Option("--new", help="A new key even if one is active")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Issue an API key. The key is printed once and never stored."""
    with runtime() as tk:
        c = tk.customers.find(customer)
        k = tk.keys.create(
            c["id"],
            name=name,
            scopes=scope or None,
            ip_allowlist=allow_ip or None,
            expires_at=_when(expires),
            force_new=new,
        )
    if as_json:
        show(k, True)
    elif k["reused"]:
        out.print(f"customer already has active key {k['id']} ({k['prefix']}…); use --new for another")
    else:
        out.print(f"key {k['id']}: [bold]{k['key']}[/bold]\n(shown once: store it now)")


@keys_app.command("list")
def keys_list(customer: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False) -> None:
    """List keys (prefixes only)."""
    with runtime() as tk:
        cid = tk.customers.find(customer)["id"] if customer else None
        keys = tk.keys.list(customer_id=cid)
    if as_json:
        show(keys, True)
        return
    t = Table("id", "customer", "prefix", "status", "scopes", "expires", "last used")
    for k in keys:
        t.add_row(
            k["id"],
            k["customer_id"],
            k["prefix"] + "…",
            k["status"],
            ",".join(k["scopes"]),
            k["expires_at"] or "",
            k["last_used_at"] or "",
        )
    out.print(t)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key for good."""
    with runtime() as tk:
        show(tk.keys.revoke(key_id), False)


@keys_app.command("suspend")
def keys_suspend(key_id: str) -> None:
    """Suspend a key (it can be resumed)."""
    with runtime() as tk:
        show(tk.keys.suspend(key_id), False)


@keys_app.command("resume")
def keys_resume(key_id: str) -> None:
    """Resume a suspended key."""
    with runtime() as tk:
        show(tk.keys.resume(key_id), False)


@keys_app.command("rotate")
def keys_rotate(
    key_id: str,
    grace: Annotated[int, typer.Option(help="Seconds the old key keeps working")] = 0,
    expires: Annotated[
        str | None, typer.Option(help="ISO 8601 expiry of the new key (default: none)")
    ] = None,
) -> None:
    """Replace a key with a new one (a key rotates once; the new key has no expiry unless given)."""
    with runtime() as tk:
        k = tk.keys.rotate(key_id, grace_seconds=grace, expires_at=_when(expires))
    out.print(f"new key {k['id']}: [bold]{k['key']}[/bold]\n(shown once: store it now)")


# ---- credits / usage / ledger ------------------------------------------------------------------------
@credits_app.command("grant")
def credits_grant(
    customer: str,
    amount: int,
    source: Annotated[
        str, typer.Option(help="purchase | promo | plan_allowance | refund | adjustment")
    ] = "purchase",
    expires: Annotated[str | None, typer.Option(help="ISO 8601 expiry")] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key", help="Makes the grant safe to retry (one is made and printed if not given)"
        ),
    ] = None,
    note: Annotated[str | None, typer.Option()] = None,
    as_json: JsonOpt = False,
) -> None:
    """Grant credits to a customer (idempotent: retry with the same --idempotency-key)."""
    from tollkeep.kit.ids import new_id

    if key is None:
        key = new_id("grant")
        # on stderr, so that --json output stays parseable
        err.print(f"idempotency key: {key}  (to retry this grant safely: --idempotency-key {key})")
    with runtime() as tk:
        c = tk.customers.find(customer)
        show(
            tk.ledger.grant(
                c["id"], amount, source=source, expires_at=_when(expires), idempotency_key=key, note=note
            ),
            as_json,
        )


@usage_app.command("record")
def usage_record(
    customer: str,
    meter: str,
    quantity: Annotated[str, typer.Option(help="Quantity (decimal)")] = "1",
    key: Annotated[str | None, typer.Option("--idempotency-key")] = None,
    prop: Annotated[list[str] | None, typer.Option("--prop", help="key=value property (repeatable)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Record a usage event and charge for it."""
    from tollkeep.kit.ids import new_id
    from tollkeep.ledger.service import UsageRequest

    props: dict[str, Any] = {}
    for p in prop or []:
        k, _, v = p.partition("=")
        props[k] = int(v) if v.isdigit() else v
    with runtime() as tk:
        c = tk.customers.find(customer)
        show(
            tk.ledger.record_usage(
                UsageRequest(c["id"], meter, _decimal(quantity), key or new_id("cli"), props)
            ),
            as_json,
        )


@ledger_app.command("verify")
def ledger_verify(as_json: JsonOpt = False) -> None:
    """Recompute every grant, wallet, hold and charge from the journal; exit 1 on any mismatch."""
    with runtime() as tk, out.status("verifying") as status:
        rep = tk.verify(progress=lambda step: status.update(f"verifying {step}"))
    if as_json:
        show(rep.to_dict(), True)
    else:
        out.print(
            f"{rep.entries} journal entries, {rep.grants} grants, {rep.wallets} wallets, "
            f"{rep.holds} holds, {rep.operations} operations"
        )
        for p in rep.problems[:200]:
            out.print(f"[red]✗[/red] {p}")
        out.print("[green]ledger OK[/green]" if rep.ok else f"[red]{len(rep.problems)} problem(s)[/red]")
    raise typer.Exit(0 if rep.ok else 1)


@ledger_app.command("show")
def ledger_show(
    customer: Annotated[str, typer.Argument(help="Customer id or external id")],
    limit: Annotated[int, typer.Option(help="Most entries to show")] = 100,
    after: Annotated[int | None, typer.Option(help="Start after this entry id (the `next` cursor)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A customer's journal entries, oldest first."""
    with runtime() as tk:
        c = tk.customers.find(customer)
        page = tk.journal(c["id"], limit=limit, after=after)
    if as_json:
        show(page, True)
        return
    t = Table("entry", "when", "kind", "delta", "grant", "operation", "hold")
    for e in page["data"]:
        t.add_row(
            str(e["id"]),
            e["created_at"],
            e["kind"],
            f"{e['delta']:+d}",
            e["grant_id"] or "(overdraft)",
            e["operation_id"],
            e["hold_id"] or "",
        )
    out.print(t)
    if page["next"]:
        out.print(f"more: --after {page['next']}")


@customers_app.command("overdraft")
def customers_overdraft(customer: str, limit: int) -> None:
    """Let a customer's wallet go down to -LIMIT (0: never below zero)."""
    with runtime() as tk:
        c = tk.customers.find(customer)
        show(tk.ledger.set_overdraft(c["id"], limit), False)


@ledger_app.command("sweep")
def ledger_sweep() -> None:
    """Release expired holds and expire grants now."""
    with runtime() as tk:
        show(tk.ledger.sweep(), False)


# ---- catalog ---------------------------------------------------------------------------------------
@catalog_app.command("check")
def catalog_check(path: Path) -> None:
    """Validate a catalog file."""
    try:
        cat = load_catalog(path)
    except CatalogError as exc:
        fail(exc)
    out.print(
        f"[green]valid[/green]: version {cat.version}, {len(cat.meters)} meters, {len(cat.plans)} plans"
    )


@catalog_app.command("show")
def catalog_show() -> None:
    """Print the active catalog as JSON."""
    with runtime() as tk:
        show(tk.catalog.to_public_dict(), True)


def run() -> None:  # pragma: no cover
    app(prog_name="tollkeep")
    sys.exit(0)
