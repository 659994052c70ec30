"""`tollkeep keys …`: issue, list, suspend, resume, revoke and rotate API keys."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show, when
from tollkeep.keys import LIMIT_FIELDS
from tollkeep.kit.actor import cli_actor

app = typer.Typer(help="API keys.", no_args_is_help=True)

SpendOpt = Annotated[int | None, typer.Option(help="Most the key may ever spend (ledger units)")]
DailyOpt = Annotated[int | None, typer.Option(help="Most the key may spend per UTC day")]
MonthlyOpt = Annotated[int | None, typer.Option(help="Most the key may spend per UTC month")]
ToolOpt = Annotated[
    list[str] | None, typer.Option(help="Tool / route name or glob pattern it may call (repeatable)")
]
RateOpt = Annotated[str | None, typer.Option(help="Its rate limit, e.g. 60/minute ('off': none)")]
ConcurrencyOpt = Annotated[int | None, typer.Option(help="Most calls in flight at once")]


def _given(**values: Any) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command("create")
def keys_create(
    customer: Annotated[str, typer.Argument(help="Customer id or external id")],
    name: Annotated[str | None, typer.Option()] = None,
    scope: Annotated[list[str] | None, typer.Option(help="Repeat for several scopes (default: all)")] = None,
    allow_ip: Annotated[
        list[str] | None, typer.Option(help="CIDR allowed to use the key (repeatable)")
    ] = None,
    expires: Annotated[str | None, typer.Option(help="ISO 8601 expiry")] = None,
    new: Annotated[bool, typer.Option("--new", help="A new key even if one is active")] = False,
    spend_limit: SpendOpt = None,
    spend_limit_daily: DailyOpt = None,
    spend_limit_monthly: MonthlyOpt = None,
    tool: ToolOpt = None,
    rate_limit: RateOpt = None,
    max_concurrency: ConcurrencyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue an API key. The key is printed once and never stored. A key given limits is always
    a new one (an agent run's own budget)."""
    limits = _given(
        spend_limit=spend_limit,
        spend_limit_daily=spend_limit_daily,
        spend_limit_monthly=spend_limit_monthly,
        tools=tool or None,
        rate_limit=rate_limit,
        max_concurrency=max_concurrency,
    )
    with runtime() as tk:
        c = tk.customers.find(customer)
        k = tk.keys.create(
            c["id"],
            name=name,
            scopes=scope or None,
            ip_allowlist=allow_ip or None,
            expires_at=when(expires),
            force_new=new,
            actor=cli_actor(),
            limits=limits,
        )
    if as_json:
        show(k, True)
    elif k["reused"]:
        out.print(f"customer already has active key {k['id']} ({k['prefix']}…); use --new for another")
    else:
        out.print(f"key {k['id']}: [bold]{k['key']}[/bold]\n(shown once: store it now)")


@app.command("list")
def keys_list(customer: Annotated[str | None, typer.Argument()] = None, as_json: JsonOpt = False) -> None:
    """List keys (prefixes only, never the key)."""
    with runtime() as tk:
        cid = tk.customers.find(customer)["id"] if customer else None
        keys = tk.keys.list(customer_id=cid)
    if as_json:  # the shape of every --json list: {"data": [...], "next": cursor or null}
        show({"data": keys, "next": None}, True)
        return
    t = id_table(
        "id",
        "customer",
        "prefix",
        "status",
        "scopes",
        "expires",
        "last used",
        ids=("id", "customer", "prefix"),
    )
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
    print_table(t)


@app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key for good."""
    with runtime() as tk:
        show(tk.keys.revoke(key_id, actor=cli_actor()), False)


@app.command("suspend")
def keys_suspend(key_id: str) -> None:
    """Suspend a key (it can be resumed)."""
    with runtime() as tk:
        show(tk.keys.suspend(key_id, actor=cli_actor()), False)


@app.command("resume")
def keys_resume(key_id: str) -> None:
    """Resume a suspended key."""
    with runtime() as tk:
        show(tk.keys.resume(key_id, actor=cli_actor()), False)


@app.command("rotate")
def keys_rotate(
    key_id: str,
    grace: Annotated[int, typer.Option(help="Seconds the old key keeps working")] = 0,
    expires: Annotated[
        str | None, typer.Option(help="ISO 8601 expiry of the new key (default: none)")
    ] = None,
) -> None:
    """Replace a key with a new one (a key rotates once; the new key has no expiry unless given)."""
    with runtime() as tk:
        k = tk.keys.rotate(key_id, grace_seconds=grace, expires_at=when(expires), actor=cli_actor())
    out.print(f"new key {k['id']}: [bold]{k['key']}[/bold]\n(shown once: store it now)")


@app.command("limits")
def keys_limits(
    key_id: str,
    spend_limit: SpendOpt = None,
    spend_limit_daily: DailyOpt = None,
    spend_limit_monthly: MonthlyOpt = None,
    tool: ToolOpt = None,
    rate_limit: RateOpt = None,
    max_concurrency: ConcurrencyOpt = None,
    clear: Annotated[
        list[str] | None, typer.Option(help=f"A limit to remove (repeatable): {', '.join(LIMIT_FIELDS)}")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a key's limits and what it has spent and holds; set or clear limits."""
    changes = _given(
        spend_limit=spend_limit,
        spend_limit_daily=spend_limit_daily,
        spend_limit_monthly=spend_limit_monthly,
        tools=tool or None,
        rate_limit=rate_limit,
        max_concurrency=max_concurrency,
    )
    for name in clear or ():
        if name not in LIMIT_FIELDS:
            raise typer.BadParameter(
                f"{name!r} is not a limit ({', '.join(LIMIT_FIELDS)})", param_hint="--clear"
            )
        changes[name] = None
    with runtime() as tk:
        k = tk.keys.update(key_id, actor=cli_actor(), **changes) if changes else tk.keys.get(key_id)
        k = {**k, "spend": tk.ledger.key_spend(key_id)}
    if as_json:
        show(k, True)
        return
    for name in LIMIT_FIELDS:
        out.print(f"{name}: {k[name] if k[name] is not None else '-'}")
    for window, used in k["spend"].items():
        out.print(f"spent ({window}): {used['spent']}, held: {used['held']}")
