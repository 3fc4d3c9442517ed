"""The questions operators ask of jobs, for the API and the CLI alike: what runs when, who runs what now, how the
last runs went, which replicas serve; and running a job now."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from gatehouse.auth.actor import Actor
from gatehouse.jobs import runs
from gatehouse.jobs.job import Job
from gatehouse.jobs.lease import Holder
from gatehouse.jobs.models import JobRun, ReplicaBeat
from gatehouse.jobs.replicas import live_replicas
from gatehouse.jobs.runner import JobRunner


@dataclass(frozen=True)
class JobState:
    """A job, its next scheduled run, who runs it now, and its newest run."""

    job: Job
    next_run: datetime | None
    holder: Holder | None
    last_run: JobRun | None


@dataclass(frozen=True)
class Overview:
    """Every job's state, recent runs, and the replicas serving the database."""

    jobs: list[JobState]
    recent: Sequence[JobRun]
    replicas: Sequence[ReplicaBeat]


async def overview(session: AsyncSession, runner: JobRunner, *, recent: int = 0) -> Overview:
    """What `GET /admin/jobs` and `gatehouse jobs list` show."""
    last = await runs.last_runs(session)
    states = [
        JobState(
            job=job,
            next_run=runner.next_run(job),
            holder=await runner.holder(session, job.name) if job.exclusive else None,
            last_run=last.get(job.name),
        )
        for job in runner.jobs.values()
    ]
    recent_runs = await runs.list_runs(session, limit=recent) if recent else []
    return Overview(jobs=states, recent=recent_runs, replicas=await live_replicas(session))


async def run_now(runner: JobRunner, name: str, *, trigger: str, actor: Actor, wait: bool) -> tuple[JobRun, bool]:
    """Run a job on this replica: (its run, finished). With `wait` False, answer once the run is recorded (or
    failed to start: a 409 while it runs elsewhere), and let it go on in the background."""
    runner.job(name)  # 404 before anything starts
    started: asyncio.Future[JobRun] = asyncio.get_running_loop().create_future()
    task = runner.submit(name, trigger=trigger, actor=actor, started=started)
    if not wait:
        waiters: list[asyncio.Future[Any]] = [started, task]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            return started.result(), False
    run = await asyncio.shield(task)
    if run is None:  # only scheduled runs (with a slot) come back empty
        raise RuntimeError(f"the {name} job returned no run")
    return run, True
