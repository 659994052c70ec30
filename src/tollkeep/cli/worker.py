"""`tollkeep worker`: the registered background jobs in a process of their own."""

from __future__ import annotations

import json
import logging
import signal
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from tollkeep.cli.common import CatalogOpt, DatabaseOpt, JsonOpt, err, out, runtime
from tollkeep.config import masked_url
from tollkeep.kit.worker import Job

if TYPE_CHECKING:
    from tollkeep.runtime import Tollkeep

__all__ = ["worker"]


def worker(
    once: Annotated[bool, typer.Option("--once", help="Run each job once, print what it did, exit")] = False,
    job: Annotated[
        list[str] | None, typer.Option("--job", "-j", help="Only this job (repeatable; see --list)")
    ] = None,
    list_jobs: Annotated[bool, typer.Option("--list", help="List the registered jobs and exit")] = False,
    database: DatabaseOpt = None,
    catalog: CatalogOpt = None,
    log_level: Annotated[
        str, typer.Option(help="Log level (each run that did something is logged)")
    ] = "info",
    as_json: JsonOpt = False,
) -> None:
    """Run the background jobs (sweeper, allowance renewals, outbox) until SIGINT/SIGTERM."""
    # `serve` runs them too (TOLLKEEP_RUN_WORKERS); run this instead, with TOLLKEEP_RUN_WORKERS=false
    # on the servers, to keep them off the API processes. On PostgreSQL several workers share the
    # jobs (rows are claimed with FOR UPDATE SKIP LOCKED).
    with runtime(database_url=database, catalog_path=catalog) as tk:
        try:
            jobs = tk.workers.select(job)
        except KeyError as exc:
            raise typer.BadParameter(str(exc.args[0]), param_hint="--job") from None
        if list_jobs:
            _list(jobs, as_json)
        elif once:
            if not _run_once(jobs, as_json):
                raise typer.Exit(1)
        else:
            _run_forever(tk, jobs, log_level)


def _list(jobs: list[Job], as_json: bool) -> None:
    rows = [{"name": j.name, "interval": j.interval, "description": j.description} for j in jobs]
    if as_json:
        out.print_json(json.dumps(rows))
        return
    t = Table("job", "every (s)", "what")
    for r in rows:
        t.add_row(str(r["name"]), f"{r['interval']:g}", str(r["description"]))
    out.print(t)


def _run_once(jobs: list[Job], as_json: bool) -> bool:
    """Each job once, in order; a failing job is reported and the others still run."""
    results: dict[str, Any] = {}
    ok = True
    for j in jobs:
        try:
            results[j.name] = j.run()
        except Exception as exc:
            ok = False
            results[j.name] = {"error": f"{type(exc).__name__}: {exc}"}
            err.print(f"[red]job {j.name} failed[/red]: {type(exc).__name__}: {exc}")
    if as_json:
        out.print_json(json.dumps(results, default=str))
    else:
        t = Table("job", "result")
        for name, result in results.items():
            t.add_row(name, json.dumps(result, default=str))
        out.print(t)
    return ok


def _run_forever(tk: Tollkeep, jobs: list[Job], log_level: str) -> None:
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()

    def on_signal(signum: int, _frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        tk.start_workers([j.name for j in jobs], first_run_now=True)
        out.print(
            f"tollkeep worker: {', '.join(f'{j.name} ({j.interval:g} s)' for j in jobs)}  "
            f"database {masked_url(tk.db.url)}  (Ctrl-C / SIGTERM stops)"
        )
        while not stop.wait(0.5):
            pass
        out.print("stopping: waiting for running jobs to finish")
        tk.stop_workers()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
