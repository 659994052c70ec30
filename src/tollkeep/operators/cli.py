"""`tollkeep server-keys …` and `tollkeep admin-tokens …`."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show
from tollkeep.kit.actor import cli_actor

server_keys_app = typer.Typer(
    help="Server keys (tk_sk_…): your backend meters any customer.", no_args_is_help=True
)
admin_tokens_app = typer.Typer(
    help="Admin tokens (tka_…) with a role: admin or read_only.", no_args_is_help=True
)


def _list(kind: str, as_json: bool) -> None:
    with runtime() as tk:
        rows = tk.operators.list(kind)
    if as_json:
        show({"data": rows, "next": None}, True)
        return
    extra = "scopes" if kind == "server" else "role"
    t = id_table("id", "name", "prefix", extra, "status", "created", "last used", ids=("id", "prefix"))
    for r in rows:
        value = ",".join(r["scopes"]) if kind == "server" else r["role"]
        t.add_row(
            r["id"],
            r["name"],
            r["prefix"] + "…",
            value,
            r["status"],
            r["created_at"],
            r["last_used_at"] or "",
        )
    print_table(t)


@server_keys_app.command("create")
def server_keys_create(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option("--scope", help="Repeatable; default: every scope")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Issue a server key (printed once: store it in your backend's secrets)."""
    with runtime() as tk:
        k = tk.operators.create_server_key(name, scope, actor=cli_actor())
    if as_json:
        show(k, True)
        return
    out.print(f"server key {k['id']}: [bold]{k['key']}[/bold]\n(shown once: store it now)", soft_wrap=True)


@server_keys_app.command("list")
def server_keys_list(as_json: JsonOpt = False) -> None:
    """List server keys (prefixes only)."""
    _list("server", as_json)


@server_keys_app.command("revoke")
def server_keys_revoke(key_id: str) -> None:
    """Revoke a server key for good."""
    with runtime() as tk:
        show(tk.operators.revoke("server", key_id, actor=cli_actor()), False)


@admin_tokens_app.command("create")
def admin_tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, or read_only (GET /admin/... only)")] = "admin",
    as_json: JsonOpt = False,
) -> None:
    """Issue an admin token (printed once)."""
    with runtime() as tk:
        k = tk.operators.create_admin_token(name, role, actor=cli_actor())
    if as_json:
        show(k, True)
        return
    out.print(f"admin token {k['id']} ({k['role']}): [bold]{k['key']}[/bold]\n(shown once)", soft_wrap=True)


@admin_tokens_app.command("list")
def admin_tokens_list(as_json: JsonOpt = False) -> None:
    """List admin tokens (prefixes only)."""
    _list("admin", as_json)


@admin_tokens_app.command("revoke")
def admin_tokens_revoke(token_id: str) -> None:
    """Revoke an admin token for good."""
    with runtime() as tk:
        show(tk.operators.revoke("admin", token_id, actor=cli_actor()), False)
