"""`tollkeep funnel`: acquisition → activation → paid."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from tollkeep.cli.common import JsonOpt, out, print_table, runtime, show
from tollkeep.kit.errors import InvalidInput


def _when(text: str | None, name: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--{name} {text!r} is not an ISO time", code="invalid_timestamp") from None
    if value.tzinfo is None:
        raise InvalidInput(f"--{name} needs a timezone (e.g. 2026-11-01T00:00:00Z)", code="invalid_timestamp")
    return value


def funnel(
    since: Annotated[str | None, typer.Option(help="ISO time (default: all time)")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time (default: now)")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Customers who reached each stage, and the conversion between stages."""
    with runtime() as tk:
        rep = tk.funnel.report(since=_when(since, "since"), until=_when(until, "until"))
    if as_json:
        show(rep, True)
        return
    from rich.table import Table

    t = Table(title="funnel", title_justify="left")
    for c in ("stage", "customers", "conversion from previous"):
        t.add_column(c)
    conv = rep["conversion"]
    prev = {"activation": conv["acquisition_to_activation"], "paid": conv["activation_to_paid"]}
    for stage, n in rep["stages"].items():
        rate = prev.get(stage)
        t.add_row(stage, str(n), "" if rate is None else f"{rate:.1%}")
    print_table(t)
    if conv["acquisition_to_paid"] is not None:
        out.print(f"acquisition → paid: {conv['acquisition_to_paid']:.1%}")
