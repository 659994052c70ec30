"""`tollkeep audit`: the audit log, newest first."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from tollkeep.audit import queries
from tollkeep.cli.common import JsonOpt, id_table, out, print_table, runtime, show


def audit(
    limit: Annotated[int, typer.Option(min=1, max=500)] = 50,
    before: Annotated[int | None, typer.Option(help="The cursor printed after the last page")] = None,
    action: Annotated[str | None, typer.Option(help="Only this action, e.g. grant.create")] = None,
    actor: Annotated[str | None, typer.Option(help="Only this admin token / server key id")] = None,
    target: Annotated[str | None, typer.Option(help="Only this target id, e.g. a customer id")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The audit log: who did what, when, from where (newest first)."""
    with runtime() as tk, tk.db.scope(write=False) as s:
        page = queries.entries(
            s, limit=limit, before_id=before, action=action, actor_id=actor, target_id=target
        )
    if as_json:
        show(page, True)
        return
    t = id_table("id", "at", "actor", "action", "target", "after", ids=("target",))
    for e in page["data"]:
        t.add_row(
            str(e["id"]),
            e["at"],
            f"{e['actor']['kind']}:{e['actor']['id']}",
            e["action"],
            f"{e['target']['kind']}:{e['target']['id'] or ''}",
            json.dumps(e["after"], default=str)[:80] if e["after"] else "",
        )
    print_table(t)
    if page.get("next"):
        out.print(f"more: --before {page['next']}")
