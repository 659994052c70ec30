"""`tollkeep subscriptions` (create, list, show, cancel, retry-renewal) and `tollkeep invoices`
(list, show, settle)."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, id_table, print_table, runtime, show
from tollkeep.kit.actor import cli_actor

app = typer.Typer(help="Subscriptions: recurring plans, their cycles and renewals.", no_args_is_help=True)
invoices_app = typer.Typer(
    help="Renewal invoices of subscriptions (with their rate audit).", no_args_is_help=True
)


@app.command("create")
def create(
    customer: Annotated[str, typer.Argument(help="customer id or external id")],
    plan: Annotated[str, typer.Option(help="a plan of the catalog with a price")],
    provider: Annotated[str, typer.Option(help="who invoices the renewals")] = "manual",
    currency: Annotated[str | None, typer.Option(help="the listed price's currency")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a customer to a plan (cycle 1 starts now)."""
    with runtime() as tk:
        out = tk.subscriptions.create(
            tk.customers.find(customer)["id"], plan, provider=provider, currency=currency, actor=cli_actor()
        )
    show(out, as_json)


@app.command("list")
def list_(
    customer: Annotated[str | None, typer.Option(help="customer id or external id")] = None,
    status: Annotated[
        str | None, typer.Option(help="trialing | active | past_due | lapsed | canceled")
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscriptions, newest first."""
    with runtime() as tk:
        cid = tk.customers.find(customer)["id"] if customer else None
        rows = tk.subscriptions.list_subscriptions(customer_id=cid, status=status)
    if as_json:
        show(rows, True)
        return
    t = id_table("id", "customer", "plan", "status", "cycle", "period end", ids=("id", "customer"))
    for r in rows:
        end = r["current_period_end"] + (" (cancels)" if r["cancel_at_period_end"] else "")
        t.add_row(r["id"], r["customer_id"], r["plan"], r["status"], str(r["cycle"]), end)
    print_table(t)


@app.command("show")
def show_(subscription_id: str, as_json: JsonOpt = False) -> None:
    """A subscription."""
    with runtime() as tk:
        show(tk.subscriptions.get(subscription_id), as_json)


@app.command("cancel")
def cancel(
    subscription_id: str,
    at_period_end: Annotated[
        bool, typer.Option("--at-period-end", help="cancel when the period ends")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Cancel a subscription now (or at the end of its period)."""
    with runtime() as tk:
        show(
            tk.subscriptions.cancel(subscription_id, at_period_end=at_period_end, actor=cli_actor()), as_json
        )


@app.command("keep")
def keep(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Undo a cancel at period end."""
    with runtime() as tk:
        show(tk.subscriptions.keep(subscription_id, actor=cli_actor()), as_json)


@app.command("retry-renewal")
def retry_renewal(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Try again to create a renewal invoice whose creation stopped after failures."""
    with runtime() as tk:
        show(tk.subscriptions.retry_renewal(subscription_id, actor=cli_actor()), as_json)


@invoices_app.command("list")
def invoices_list(
    subscription: Annotated[str | None, typer.Option(help="subscription id")] = None,
    customer: Annotated[str | None, typer.Option(help="customer id")] = None,
    status: Annotated[str | None, typer.Option(help="draft | open | paid | void")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Invoices, newest first (or one subscription's, by cycle)."""
    with runtime() as tk:
        if subscription:
            rows = tk.subscriptions.invoices(subscription)
        else:
            rows = tk.subscriptions.list_invoices(customer_id=customer, status=status)
    if as_json:
        show(rows, True)
        return
    t = id_table(
        "id", "subscription", "cycle", "status", "amount", "listed", "rate", ids=("id", "subscription")
    )
    for r in rows:
        a = r["rate_audit"]
        t.add_row(
            r["id"],
            r["subscription_id"],
            str(r["cycle"]),
            r["status"],
            f"{r['amount']} {r['currency']}",
            f"{a['listed_amount']} {a['listed_currency']}",
            f"{a['rate']} ({a['rate_source']})",
        )
    print_table(t)


@invoices_app.command("show")
def invoices_show(invoice_id: str, as_json: JsonOpt = False) -> None:
    """An invoice and its rate audit."""
    with runtime() as tk:
        show(tk.subscriptions.get_invoice(invoice_id), as_json)


@invoices_app.command("settle")
def invoices_settle(
    invoice_id: str,
    payment_ref: Annotated[str | None, typer.Option(help="the payment's id, if any")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Settle an invoice paid outside tollkeep (idempotent: a paid invoice stays as it is)."""
    with runtime() as tk:
        show(tk.subscriptions.settle_invoice(invoice_id, payment_ref, actor=cli_actor()), as_json)
