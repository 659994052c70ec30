"""`tollkeep keys …`: issue, list, suspend, resume, revoke and rotate API keys."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show, when
from tollkeep.kit.actor import cli_actor

app = typer.Typer(help="API keys.", no_args_is_help=True)


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
            expires_at=when(expires),
            force_new=new,
            actor=cli_actor(),
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
