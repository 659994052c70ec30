"""`tollkeep customers …`: create, list and show customers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from tollkeep.cli.common import JsonOpt, out, runtime, show

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
        show(tk.customers.create(external_id, email=email, name=name, plan=plan), as_json)


@app.command("list")
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


@app.command("show")
def customers_show(
    ref: Annotated[str, typer.Argument(help="Customer id or external id")], as_json: JsonOpt = False
) -> None:
    """A customer with balance and grants."""
    with runtime() as tk:
        c = tk.customers.find(ref)
        show({**c, "balance": tk.balance(c["id"])}, as_json)
