"""The ledger's commands: `credits grant`, `usage record`, `ledger verify|show|sweep`, and
`customers overdraft` (added to the customers group)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tollkeep.cli.common import JsonOpt, decimal_arg, err, id_table, out, print_table, runtime, show, when
from tollkeep.kit.actor import cli_actor
from tollkeep.ledger.schemas import MAX_AMOUNT

credits_app = typer.Typer(help="Credits.", no_args_is_help=True)
usage_app = typer.Typer(help="Usage.", no_args_is_help=True)
ledger_app = typer.Typer(help="The ledger.", no_args_is_help=True)


@credits_app.command("grant")
def credits_grant(
    customer: str,
    amount: Annotated[int, typer.Argument(min=1, max=MAX_AMOUNT, help="Credits (ledger unit)")],
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

    with runtime() as tk:
        c = tk.customers.find(customer)
        if key is None:
            key = new_id("grant")
            # on stderr, so that --json output stays parseable
            err.print(
                f"idempotency key: {key}  (to retry this grant safely: --idempotency-key {key})",
                soft_wrap=True,
            )
        show(
            tk.ledger.grant(
                c["id"],
                amount,
                source=source,
                expires_at=when(expires),
                idempotency_key=key,
                note=note,
                actor=cli_actor(),
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
                UsageRequest(c["id"], meter, decimal_arg(quantity), key or new_id("cli"), props)
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
    t = id_table(
        "entry", "when", "kind", "delta", "grant", "operation", "hold", ids=("grant", "operation", "hold")
    )
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
    print_table(t)
    if page["next"]:
        out.print(f"more: --after {page['next']}")


@ledger_app.command("sweep")
def ledger_sweep() -> None:
    """Release expired holds and expire grants now."""
    with runtime() as tk:
        show(tk.ledger.sweep(actor=cli_actor()), False)


def customers_overdraft(
    customer: str, limit: Annotated[int, typer.Argument(min=0, max=MAX_AMOUNT, help="Credits")]
) -> None:
    """Let a customer's wallet go down to -LIMIT (0: never below zero)."""
    with runtime() as tk:
        c = tk.customers.find(customer)
        show(tk.ledger.set_overdraft(c["id"], limit, actor=cli_actor()), False)
