"""What every command group shares: the global options, the runtime, output and errors.

Each domain's commands live in its own ``cli.py`` (a Typer sub-app); ``cli/main.py`` collects them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from tollkeep.config import Settings
from tollkeep.kit.errors import TollkeepError

if TYPE_CHECKING:
    from tollkeep.runtime import Tollkeep

__all__ = [
    "CatalogOpt",
    "DatabaseOpt",
    "JsonOpt",
    "decimal_arg",
    "err",
    "fail",
    "id_table",
    "options",
    "out",
    "print_table",
    "runtime",
    "settings",
    "show",
    "when",
]

out = Console()
err = Console(stderr=True)
options: dict[str, Any] = {}  # the global --database / --catalog, set by the callback

DatabaseOpt = Annotated[
    str | None, typer.Option("--database", "-d", help="Database URL (TOLLKEEP_DATABASE_URL)")
]
CatalogOpt = Annotated[
    Path | None, typer.Option("--catalog", "-c", help="Catalog TOML (TOLLKEEP_CATALOG_PATH)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON")]


def settings(**overrides: Any) -> Settings:
    kw: dict[str, Any] = {}
    if options.get("database"):
        kw["database_url"] = options["database"]
    if options.get("catalog"):
        kw["catalog_path"] = options["catalog"]
    elif not os.environ.get("TOLLKEEP_CATALOG_PATH") and Path("tollkeep.toml").exists():
        kw["catalog_path"] = Path("tollkeep.toml")
    kw.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(_env_file=".env", **kw)


@contextmanager
def runtime(*, setup: bool = False, **overrides: Any) -> Iterator[Tollkeep]:
    """The runtime on the configured database. Only ``setup`` commands (init, migrate, serve,
    demo) create or migrate a database; the others use one that exists and is up to date, and
    otherwise fail in one line saying which database they looked for and what to run."""
    from tollkeep.runtime import Tollkeep

    try:
        tk = Tollkeep(settings(**overrides), migrate=setup, existing=not setup)
    except TollkeepError as exc:
        fail(exc)
    try:
        yield tk
    except TollkeepError as exc:
        fail(exc)
    finally:
        tk.close()


def fail(exc: TollkeepError) -> None:
    # one line, however narrow the terminal: it may be pasted into a search or an issue
    issues = exc.details.get("issues", [])
    # a catalog error's message lists its issues too: print them once, one per line
    message = exc.message.splitlines()[0] if issues else exc.message
    err.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {message}", soft_wrap=True, markup=True)
    for issue in issues:
        where = ":".join(str(p) for p in (issue.get("file"), issue.get("line")) if p)
        err.print(f"  {where} {issue.get('key')}: {issue.get('reason')}", soft_wrap=True, markup=False)
    raise typer.Exit(2)


def show(data: Any, as_json: bool) -> None:
    if as_json or not isinstance(data, dict):
        out.print_json(json.dumps(data, default=str))
        return
    t = Table(show_header=False, box=None)
    for k, v in data.items():
        t.add_row(f"[bold]{k}[/bold]", json.dumps(v, default=str) if isinstance(v, dict | list) else str(v))
    out.print(t)


def id_table(*columns: str, ids: tuple[str, ...] = ("id",), title: str | None = None) -> Table:
    """A table whose id columns are never wrapped or cut, however narrow the terminal (ids are
    copied from it into the next command); the other columns fold instead."""
    t = Table(title=title, title_justify="left")
    for c in columns:
        if c in ids:
            t.add_column(c, no_wrap=True, overflow="ignore", min_width=len(c))
        else:
            t.add_column(c, overflow="fold")
    return t


def print_table(t: Table) -> None:
    """Print a table at its natural width when the terminal is narrower: a line the terminal
    wraps keeps every id whole, where a table squeezed to the width would cut them."""
    from rich.measure import Measurement

    natural = Measurement.get(out, out.options.update(max_width=10_000), t).maximum
    if natural <= out.width:
        out.print(t)
        return
    # rich never prints wider than its console: a console of the table's width, on the same
    # stream (resolved at print time, like ``out``'s)
    Console(width=natural, force_terminal=out.is_terminal, no_color=out.no_color).print(t)


def when(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an ISO 8601 timestamp") from None
    if dt.tzinfo is None:
        raise typer.BadParameter("give a timezone, e.g. 2026-12-31T00:00:00Z")
    return dt


def decimal_arg(value: str) -> Decimal:
    try:
        return Decimal(value)
    except InvalidOperation:
        raise typer.BadParameter(f"{value!r} is not a number") from None
