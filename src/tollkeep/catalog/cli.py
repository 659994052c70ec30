"""`tollkeep catalog check|show`."""

from __future__ import annotations

from pathlib import Path

import typer

from tollkeep.catalog import CatalogError, load_catalog
from tollkeep.cli.common import fail, out, runtime, show

app = typer.Typer(help="The catalog (meters, prices, plans).", no_args_is_help=True)


@app.command("check")
def catalog_check(path: Path) -> None:
    """Validate a catalog file."""
    try:
        cat = load_catalog(path)
    except CatalogError as exc:
        fail(exc)
    out.print(
        f"[green]valid[/green]: version {cat.version}, {len(cat.meters)} meters, {len(cat.plans)} plans"
    )


@app.command("show")
def catalog_show() -> None:
    """Print the active catalog as JSON."""
    with runtime() as tk:
        show(tk.catalog.to_public_dict(), True)
