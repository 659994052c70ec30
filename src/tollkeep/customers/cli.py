"""`tollkeep customers …`: create, list and show customers."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show
from tollkeep.kit.actor import cli_actor

app = typer.Typer(help="Customers.", no_args_is_help=True)


@app.command("create")
def customers_create(
    external_id: str,
    email: Annotated[str | None, typer.Option()] = None,
    name: Annotated[str | None, typer.Option()] = None,
    plan: Annotated[str | None, typer.Option(help="Plan key from the catalog")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a customer."""
    with runtime() as tk:
        show(tk.customers.create(external_id, email=email, name=name, plan=plan, actor=cli_actor()), as_json)


@app.command("list")
def customers_list(
    limit: Annotated[int, typer.Option()] = 50,
    after: Annotated[str | None, typer.Option(help="The cursor printed after the last page")] = None,
    q: Annotated[str | None, typer.Option(help="Search external id / email")] = None,
    as_json: JsonOpt = False,
) -> None:
    """List customers."""
    with runtime() as tk:
        page = tk.customers.list(limit=limit, after=after, q=q)
    if as_json:
        show(page, True)
        return
    t = id_table("id", "external_id", "email", "plan", "status", "created", ids=("id", "external_id"))
    for c in page["data"]:
        t.add_row(c["id"], c["external_id"], c["email"] or "", c["plan"] or "", c["status"], c["created_at"])
    print_table(t)
    if page.get("next"):
        out.print(f"more: --after {page['next']}")


@app.command("show")
def customers_show(
    ref: Annotated[str, typer.Argument(help="Customer id or external id")], as_json: JsonOpt = False
) -> None:
    """A customer with balance and grants."""
    with runtime() as tk:
        c = tk.customers.find(ref)
        balance = tk.balance(c["id"])
    if as_json:
        show({**c, "balance": balance}, True)
        return
    show(c, False)
    unit = balance["unit"]
    out.print(
        f"\n[bold]balance[/bold] {balance['balance']} {unit}  available {balance['available']}  "
        f"held {balance['held']}  overdraft {balance['overdraft_used']}/{balance['overdraft_limit']}"
    )
    t = id_table(
        "grant", "source", "amount", "remaining", "priority", "meter", "expires", "live", ids=("grant",)
    )
    for g in balance["grants"]:
        t.add_row(
            g["id"],
            g["source"],
            str(g["amount"]),
            str(g["remaining"]),
            str(g["priority"]),
            g["meter"] or "",
            g["expires_at"] or "never",
            "yes" if g["live"] else "no",
        )
    print_table(t)
