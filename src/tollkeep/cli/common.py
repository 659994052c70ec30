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
    "options",
    "out",
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
    err.print(f"[red]error[/red] [bold]{exc.code}[/bold]: {exc.message}", soft_wrap=True)
    for issue in exc.details.get("issues", []):
        err.print(f"  {issue.get('file') or ''} {issue.get('key')}: {issue.get('reason')}")
    raise typer.Exit(2)


def show(data: Any, as_json: bool) -> None:
    if as_json or not isinstance(data, dict):
        out.print_json(json.dumps(data, default=str))
        return
    t = Table(show_header=False, box=None)
    for k, v in data.items():
        t.add_row(f"[bold]{k}[/bold]", json.dumps(v, default=str) if isinstance(v, dict | list) else str(v))
    out.print(t)


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
