"""`tollkeep webhooks …`: register endpoints, see and replay their deliveries."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show
from tollkeep.kit.actor import cli_actor

app = typer.Typer(
    help="Outbound webhooks (Standard Webhooks): endpoints and deliveries.", no_args_is_help=True
)


def _shown_once(ep: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        show(ep, True)
        return
    out.print(
        f"{what} {ep['id']} ({ep['url']})\nsigning secret: [bold]{ep['secret']}[/bold]\n"
        "(shown once: store it where your receiver verifies signatures)",
        soft_wrap=True,
    )


@app.command("add")
def add(
    url: str,
    event: Annotated[
        list[str] | None,
        typer.Option("--event", help="Event type (repeatable; 'credits.*' works); default: all"),
    ] = None,
    description: Annotated[str | None, typer.Option(help="A note for you")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an endpoint; prints its signing secret once."""
    with runtime() as tk:
        ep = tk.webhooks.create(url, events=event or None, description=description, actor=cli_actor())
    _shown_once(ep, as_json, "endpoint")


@app.command("list")
def list_endpoints(as_json: JsonOpt = False) -> None:
    """List endpoints (never their secrets)."""
    with runtime() as tk:
        rows = tk.webhooks.list()
    if as_json:
        show({"data": rows, "next": None}, True)
        return
    t = id_table("id", "url", "events", "status", "failing since", "created")
    for r in rows:
        events = "all" if r["events"] is None else ",".join(r["events"])
        status = r["status"] + (f" ({r['disabled_reason']})" if r["disabled_reason"] else "")
        t.add_row(r["id"], r["url"], events, status, r["failing_since"] or "", r["created_at"])
    print_table(t)


@app.command("show")
def show_endpoint(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """One endpoint."""
    with runtime() as tk:
        show(tk.webhooks.get(endpoint_id), as_json)


def _status(endpoint_id: str, status: str, as_json: bool) -> None:
    with runtime() as tk:
        show(tk.webhooks.update(endpoint_id, {"status": status}, actor=cli_actor()), as_json)


@app.command("disable")
def disable(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """Stop sending to an endpoint (its deliveries wait)."""
    _status(endpoint_id, "disabled", as_json)


@app.command("enable")
def enable(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """Send to an endpoint again (also one disabled for failing)."""
    _status(endpoint_id, "enabled", as_json)


@app.command("remove")
def remove(endpoint_id: str) -> None:
    """Delete an endpoint with its deliveries."""
    with runtime() as tk:
        tk.webhooks.remove(endpoint_id, actor=cli_actor())
    out.print(f"endpoint {endpoint_id} deleted")


@app.command("rotate-secret")
def rotate_secret(
    endpoint_id: str,
    overlap: Annotated[int, typer.Option(help="Seconds the old secret keeps signing too (0: stop now)")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """A new signing secret, printed once."""
    with runtime() as tk:
        ep = tk.webhooks.rotate_secret(endpoint_id, overlap_seconds=overlap, actor=cli_actor())
    _shown_once(ep, as_json, "endpoint")


def _delivery(d: dict[str, Any], as_json: bool) -> None:
    if as_json:
        show(d, True)
        return
    show({k: v for k, v in d.items() if k not in ("attempt_log", "body")}, False)
    t = id_table("attempt", "at", "ok", "status", "ms", "error", ids=("attempt",))
    for a in d["attempt_log"]:
        t.add_row(
            str(a["attempt"]),
            a["at"],
            "yes" if a["ok"] else "no",
            str(a["response_status"] or ""),
            str(a["latency_ms"] if a["latency_ms"] is not None else ""),
            a["error"] or "",
        )
    print_table(t)


@app.command("test")
def test(endpoint_id: str, as_json: JsonOpt = False) -> None:
    """Send a webhook.test event to this endpoint now."""
    with runtime() as tk:
        _delivery(tk.webhooks.send_test(endpoint_id, actor=cli_actor()), as_json)


@app.command("deliveries")
def deliveries(
    endpoint_id: str,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    after: Annotated[str | None, typer.Option(help="The `next` cursor of the last page")] = None,
    as_json: JsonOpt = False,
) -> None:
    """An endpoint's deliveries, newest first."""
    with runtime() as tk:
        page = tk.webhooks.deliveries(endpoint_id, limit=limit, after=after)
    if as_json:
        show(page, True)
        return
    t = id_table("id", "event", "type", "status", "attempts", "http", "ms", "error", ids=("id", "event"))
    for d in page["data"]:
        t.add_row(
            d["id"],
            d["event_id"],
            d["type"],
            d["status"],
            str(d["attempts"]),
            str(d["response_status"] or ""),
            str(d["latency_ms"] if d["latency_ms"] is not None else ""),
            d["error"] or "",
        )
    print_table(t)
    if page["next"]:
        out.print(f"more: --after {page['next']}")


@app.command("redeliver")
def redeliver(delivery_id: str, as_json: JsonOpt = False) -> None:
    """Send a delivery again now (same webhook-id)."""
    with runtime() as tk:
        _delivery(tk.webhooks.redeliver(delivery_id, actor=cli_actor()), as_json)
