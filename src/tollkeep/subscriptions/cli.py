"""`tollkeep subscriptions` (create, list, show, cancel, retry-renewal, pause, resume, change-plan,
cancel-scheduled-change), `tollkeep invoices` (list, show, settle) and `tollkeep codes` (create,
list, show, disable)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, id_table, print_table, runtime, show
from tollkeep.kit.actor import cli_actor

app = typer.Typer(help="Subscriptions: recurring plans, their cycles and renewals.", no_args_is_help=True)
codes_app = typer.Typer(help="Discount, free-plan and free-licence codes.", no_args_is_help=True)
invoices_app = typer.Typer(
    help="Renewal invoices of subscriptions (with their rate audit).", no_args_is_help=True
)


@app.command("create")
def create(
    customer: Annotated[str, typer.Argument(help="customer id or external id")],
    plan: Annotated[str, typer.Option(help="a plan of the catalog with a price")],
    provider: Annotated[str, typer.Option(help="who invoices the renewals")] = "manual",
    currency: Annotated[str | None, typer.Option(help="the listed price's currency")] = None,
    code: Annotated[str | None, typer.Option(help="a discount or free-plan code")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Subscribe a customer to a plan (cycle 1 starts now)."""
    with runtime() as tk:
        out = tk.subscriptions.create(
            tk.customers.find(customer)["id"],
            plan,
            provider=provider,
            currency=currency,
            code=code,
            actor=cli_actor(),
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


@app.command("pause")
def pause(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Pause: no renewal, no lapse, the plan's entitlements dropped until resumed."""
    with runtime() as tk:
        show(tk.subscriptions.pause(subscription_id, actor=cli_actor()), as_json)


@app.command("resume")
def resume(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Resume a paused subscription: the next cycle is due (invoiced) now."""
    with runtime() as tk:
        show(tk.subscriptions.resume(subscription_id, actor=cli_actor()), as_json)


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


@app.command("change-plan")
def change_plan(
    subscription_id: str,
    plan: Annotated[str, typer.Option(help="the new plan")],
    when: Annotated[str, typer.Option(help="now (nothing charged) | renewal")] = "now",
    as_json: JsonOpt = False,
) -> None:
    """Move a subscription to another plan now, or at its next renewal."""
    with runtime() as tk:
        show(
            tk.subscriptions.changes.admin_change(subscription_id, plan, when=when, actor=cli_actor()),
            as_json,
        )


@app.command("cancel-scheduled-change")
def cancel_scheduled_change(subscription_id: str, as_json: JsonOpt = False) -> None:
    """Cancel the plan change scheduled for the next renewal."""
    with runtime() as tk:
        show(tk.subscriptions.changes.cancel_scheduled(subscription_id, actor=cli_actor()), as_json)


@codes_app.command("create")
def codes_create(
    code: str,
    kind: Annotated[str, typer.Option(help="discount | free_plan | free_license")] = "discount",
    percent: Annotated[int | None, typer.Option(help="percent off (1..100)")] = None,
    amount: Annotated[int | None, typer.Option(help="amount off, minor units")] = None,
    currency: Annotated[str | None, typer.Option(help="the amount's currency")] = None,
    plan: Annotated[list[str] | None, typer.Option(help="a plan it applies to (repeat; none: all)")] = None,
    duration: Annotated[str, typer.Option(help="once | forever")] = "once",
    max_redemptions: Annotated[int | None, typer.Option(help="how many times it can be redeemed")] = None,
    expires_at: Annotated[datetime | None, typer.Option(help="ISO time, UTC")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a code."""
    if expires_at is not None and expires_at.tzinfo is None:
        expires_at = expires_at.replace(tzinfo=UTC)
    with runtime() as tk:
        out = tk.subscriptions.codes.create(
            code,
            kind,
            percent=percent,
            amount=amount,
            currency=currency,
            plans=plan or [],
            duration=duration,
            max_redemptions=max_redemptions,
            expires_at=expires_at,
            actor=cli_actor(),
        )
    show(out, as_json)


@codes_app.command("list")
def codes_list(as_json: JsonOpt = False) -> None:
    """Codes, newest first."""
    with runtime() as tk:
        rows = tk.subscriptions.codes.list()
    if as_json:
        show(rows, True)
        return
    t = id_table("code", "kind", "off", "plans", "duration", "redeemed", "state", ids=("code",))
    for r in rows:
        off = f"{r['percent']}%" if r["percent"] else f"{r['amount']} {r['currency']}" if r["amount"] else "-"
        left = f"{r['redemptions']}/{r['max_redemptions'] or '∞'}"
        t.add_row(
            r["code"],
            r["kind"],
            off,
            ",".join(r["plans"]) or "all",
            r["duration"],
            left,
            "disabled" if r["disabled"] else "active",
        )
    print_table(t)


@codes_app.command("show")
def codes_show(code: str, as_json: JsonOpt = False) -> None:
    """A code."""
    with runtime() as tk:
        show(tk.subscriptions.codes.get(code), as_json)


@codes_app.command("disable")
def codes_disable(code: str, as_json: JsonOpt = False) -> None:
    """No more redemptions of a code (a forever code already redeemed keeps applying)."""
    with runtime() as tk:
        show(tk.subscriptions.codes.disable(code, actor=cli_actor()), as_json)
