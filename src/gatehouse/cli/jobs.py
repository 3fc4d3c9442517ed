"""`gatehouse jobs ...`: list the background jobs and run one now (jobs/)."""

from __future__ import annotations

import contextlib
import os
import socket
from datetime import datetime

import orjson
import typer
from rich.table import Table

from gatehouse.cli.common import CLI_ACTOR, console, err_console, quiet_settings, run
from gatehouse.db.engine import create_engine, create_sessionmaker
from gatehouse.jobs import service
from gatehouse.jobs.models import JobRun
from gatehouse.jobs.runner import JobRunner
from gatehouse.runtime import job_definitions

app = typer.Typer(
    no_args_is_help=True, help="Jobs: the retention purge, scheduled backups, upstream probes, database maintenance."
)


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def _counts(run: JobRun) -> str:
    """What a run did, briefly: its non-zero counts (cut-off times left out)."""
    counts = orjson.loads(run.counts or "{}")
    done = [f"{name} {value}" for name, value in counts.items() if value and not name.endswith("_before")]
    return ", ".join(done) or "nothing to do"


@app.command("list")
def list_jobs(runs: int = typer.Option(10, "--runs", min=0, max=500, help="Also show this many recent runs.")) -> None:
    """The jobs, their schedules (UTC), who runs them now, their last runs; and the replicas serving."""
    settings = quiet_settings()

    async def go() -> None:
        engine = create_engine(settings)
        try:
            sessionmaker = create_sessionmaker(engine)
            runner = JobRunner(settings, sessionmaker, replica="cli", jobs=job_definitions(settings))
            async with sessionmaker() as session:
                overview = await service.overview(session, runner, recent=runs)
        finally:
            await engine.dispose()
        table = Table("job", "schedule (UTC)", "next run", "running", "last run", "status", "what it did", expand=True)
        for state in overview.jobs:
            job, holder, previous = state.job, state.holder, state.last_run
            table.add_row(
                job.name,
                job.schedule.text if job.schedule else (job.schedule_note or "only when asked"),
                _when(state.next_run),
                f"on {holder.replica} since {_when(holder.since)}" if holder else "-",
                _when(previous.started_at) if previous else "never",
                previous.status if previous else "-",
                (previous.error or _counts(previous)) if previous else "-",
            )
        console.print(table)
        if overview.recent:
            history = Table("run", "job", "trigger", "by", "started", "s", "status", "what it did", expand=True)
            for item in overview.recent:
                seconds = (item.finished_at - item.started_at).total_seconds() if item.finished_at else None
                history.add_row(
                    str(item.id),
                    item.job,
                    item.trigger,
                    item.requested_by or "-",
                    _when(item.started_at),
                    f"{seconds:.1f}" if seconds is not None else "-",
                    item.status,
                    item.error or _counts(item),
                )
            console.print(history)
        serving = ", ".join(f"{r.host} pid {r.pid}" for r in overview.replicas) or "none"
        console.print(f"replicas serving this database: {serving}")

    run(go, settings)


@app.command("run")
def run_job(name: str = typer.Argument(..., help="purge, backup or maintain")) -> None:
    """Run a job now, from this shell; it takes the same lock as the servers, so it never overlaps their run."""
    settings = quiet_settings()

    async def go() -> JobRun | None:
        engine = create_engine(settings)
        try:
            runner = JobRunner(
                settings,
                create_sessionmaker(engine),
                replica=f"cli:{socket.gethostname()}:{os.getpid()}",
                jobs=job_definitions(settings),
            )
            with console.status(f"running {name}...") if console.is_terminal else contextlib.nullcontext():
                return await runner.run(name, trigger="cli", actor=CLI_ACTOR)
        finally:
            await engine.dispose()

    result = run(go, settings)
    if result is None:  # only a scheduled run (a slot) comes back without one
        raise RuntimeError(f"the {name} job returned no run")
    if result.status != "ok":
        err_console.print(f"[red]{name} failed[/red] (run {result.id}): {result.error}", soft_wrap=True)
        raise typer.Exit(1)
    console.print(f"{name} ok (run {result.id}): {_counts(result)}", soft_wrap=True)
