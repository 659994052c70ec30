"""`tollkeep inbox …` (provider webhooks received) and `tollkeep payments …` (applied payments,
reconcile)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from tollkeep.audit import record
from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show
from tollkeep.kit.actor import cli_actor
from tollkeep.kit.errors import InvalidInput

inbox_app = typer.Typer(
    help="Provider webhooks: stored raw, processed once, replayable.", no_args_is_help=True
)
payments_app = typer.Typer(help="Payments applied, and reconcile with a provider.", no_args_is_help=True)


@inbox_app.command("list")
def inbox_list(
    provider: Annotated[str | None, typer.Option(help="stripe, github, btcpay, zaprite, local")] = None,
    status: Annotated[str | None, typer.Option(help="pending, processed, ignored or failed")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    before: Annotated[str | None, typer.Option(help="The cursor printed after the last page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Webhooks received, newest first."""
    with runtime() as tk:
        page = tk.payments.list_events(provider=provider, status=status, limit=limit, before=before)
    if as_json:
        show(page, True)
        return
    t = id_table("id", "provider", "type", "status", "attempts", "received_at", "error")
    for e in page["data"]:
        t.add_row(
            e["id"],
            e["provider"],
            e["type"],
            e["status"],
            str(e["attempts"]),
            e["received_at"],
            (e["error"] or "")[:60],
        )
    print_table(t)
    if page.get("next"):
        out.print(f"more: --before {page['next']}")


@inbox_app.command("show")
def inbox_show(inbox_id: str) -> None:
    """One webhook: its payload, the headers kept, what processing did."""
    with runtime() as tk:
        show(tk.inbox.show(inbox_id), True)


@inbox_app.command("replay")
def inbox_replay(
    inbox_id: str,
    now: Annotated[bool, typer.Option("--now/--queue", help="Process it here and now (default)")] = True,
) -> None:
    """Process a webhook again (a failed one after fixing the catalog; an applied one changes
    nothing: every effect is keyed by the provider's payment id)."""
    with runtime() as tk:
        tk.inbox.replay(inbox_id, actor=cli_actor())
        if now:
            tk.inbox.process()
        view = tk.inbox.show(inbox_id)
    out.print(f"{view['id']}: {view['status']}" + (f" ({view['error']})" if view["error"] else ""))


@payments_app.command("list")
def payments_list(
    customer: Annotated[str | None, typer.Option(help="Only this customer id")] = None,
    provider: Annotated[str | None, typer.Option()] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Payments applied (and failed), newest first."""
    with runtime() as tk:
        page = tk.payments.list_payments(customer_id=customer, provider=provider, limit=limit)
    if as_json:
        show(page, True)
        return
    t = id_table(
        "id",
        "provider",
        "payment_id",
        "customer_id",
        "status",
        "amount",
        "credits",
        ids=("id", "customer_id"),
    )
    for p in page["data"]:
        amount = f"{p['amount']} {p['currency']}" if p["amount"] is not None else ""
        t.add_row(
            p["id"], p["provider"], p["payment_id"], p["customer_id"], p["status"], amount, str(p["credits"])
        )
    print_table(t)


@payments_app.command("reconcile")
def payments_reconcile(
    provider: Annotated[str, typer.Option(help="stripe, btcpay or zaprite")],
    since: Annotated[str, typer.Option(help="ISO time, e.g. 2026-11-01T00:00:00Z")],
) -> None:
    """Re-scan a provider for payments settled since a time that the inbox never received (a
    webhook relay that was down) and apply them through the same path, once."""
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--since {since!r} is not an ISO time", code="invalid_timestamp") from None
    if when.tzinfo is None:
        raise InvalidInput("--since needs a timezone (e.g. 2026-11-01T00:00:00Z)", code="invalid_timestamp")
    with runtime() as tk:
        res = tk.payments.reconcile(provider, when)
        tk.executor.call(
            lambda s: record(
                s, cli_actor(), "payments.reconcile", ("provider", provider), after=res, at=tk.clock.now()
            )
        )
    show(res, True)


@payments_app.command("meter-events")
def payments_meter_events(
    all_: Annotated[bool, typer.Option("--all", help="Also the ones already reported")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Usage of postpaid plans queued for Stripe's Billing Meter Events, newest first: by default
    the ones not reported yet, with the last error (no Stripe customer linked, Stripe down)."""
    with runtime() as tk:
        rows = tk.meters.queued(limit=limit, pending=not all_)
    if as_json:
        show({"data": _jsonable(rows)}, True)
        return
    t = id_table("identifier", "customer", "event_name", "value", "attempts", "reported", "error")
    for r in rows:
        p = r["payload"]
        t.add_row(
            p["identifier"],
            p["customer_id"],
            p["event_name"],
            p["value"],
            str(r["attempts"]),
            "yes" if r["delivered_at"] else "no",
            (r["last_error"] or "")[:60],
        )
    print_table(t)


def _jsonable(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    return [{k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in r.items()} for r in rows]
