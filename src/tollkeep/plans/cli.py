"""`tollkeep customers plan`: move a customer to another plan (added to the customers group)."""

from __future__ import annotations

from typing import Annotated

import typer

from tollkeep.cli.common import runtime, show
from tollkeep.kit.actor import cli_actor


def customers_plan(ref: str, plan: Annotated[str, typer.Argument(help="Plan key, or 'none'")]) -> None:
    """Move a customer to another plan."""
    with runtime() as tk:
        c = tk.customers.find(ref)
        show(tk.plans.change_plan(c["id"], None if plan == "none" else plan, actor=cli_actor()), False)
