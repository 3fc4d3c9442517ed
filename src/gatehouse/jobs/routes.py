"""Routes: /admin/jobs (list, history) and /admin/jobs/{name}/run (an admin, or X-Job-Token for a scheduler)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Path, Query, Request, Response

from gatehouse.auth.access import PRINCIPAL_SCOPE_KEY, require
from gatehouse.auth.actor import Actor, actor_for, client_ip
from gatehouse.auth.roles import Role
from gatehouse.deps import RuntimeDep, SessionDep
from gatehouse.jobs.models import JobRun
from gatehouse.jobs.replicas import live_replicas
from gatehouse.jobs.runner import JobRunner, list_runs
from gatehouse.jobs.schemas import JobHolder, JobList, JobRead, JobRunPage, JobRunRead, ReplicaRead
from gatehouse.runtime import Runtime

router = APIRouter(tags=["jobs"])
MAX_ID = 2**63 - 1  # job_run ids are BIGINT
JOB_TOKEN_HEADER = "x-job-token"  # noqa: S105 (a header name)
JobName = Path(max_length=64, description="purge, backup or probe")


def _runner(runtime: Runtime) -> JobRunner:
    return runtime.jobs


@router.get("/admin/jobs", response_model=JobList, dependencies=[require(Role.MONITOR)])
async def list_jobs(runtime: RuntimeDep, session: SessionDep) -> JobList:
    """Every job: its schedule and next run, who runs it now, its last run; and the replicas serving."""
    runner = _runner(runtime)
    last = await runner.last_runs(session)
    jobs = []
    for job in runner.jobs.values():
        holder = await runner.holder(session, job.name) if job.exclusive else None
        jobs.append(
            JobRead(
                name=job.name,
                description=job.description,
                schedule=job.schedule.text if job.schedule else job.schedule_note,
                next_run=runner.next_run(job),
                one_replica_at_a_time=job.exclusive,
                running=JobHolder(replica=holder.replica, run_id=holder.run_id, since=holder.since) if holder else None,
                last_run=JobRunRead.of(last[job.name]) if job.name in last else None,
            )
        )
    replicas = [ReplicaRead.model_validate(beat) for beat in await live_replicas(session)]
    return JobList(jobs=jobs, replicas=replicas)


@router.get("/admin/jobs/runs", response_model=JobRunPage, dependencies=[require(Role.MONITOR)])
async def job_runs(
    session: SessionDep,
    job: str | None = Query(None, max_length=64, description="Only this job's runs."),
    before: int | None = Query(None, ge=1, le=MAX_ID, description="Cursor: the `next_cursor` of the previous page."),
    limit: int = Query(50, ge=1, le=500),
) -> JobRunPage:
    """Recorded runs, newest first."""
    rows = await list_runs(session, job=job, before_id=before, limit=limit + 1)
    page = rows[:limit]
    return JobRunPage(items=[JobRunRead.of(r) for r in page], next_cursor=page[-1].id if len(rows) > limit else None)


@router.post(
    "/admin/jobs/{name}/run",
    response_model=JobRunRead,
    responses={202: {"description": "Started (wait=false): poll GET /admin/jobs/runs."}},
    dependencies=[require(Role.ADMIN, token_header=(JOB_TOKEN_HEADER, "job_token"))],
)
async def run_job(
    request: Request,
    response: Response,
    runtime: RuntimeDep,
    name: str = JobName,
    wait: bool = Query(True, description="Answer when the run has finished (default), or at once with 202."),
) -> JobRunRead:
    """Run a job now, on this replica (an exclusive job refuses with 409 while it runs anywhere)."""
    runner = _runner(runtime)
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is not None:
        actor, trigger = actor_for(request, principal), "api"
    else:
        request_id = request.scope.get("state", {}).get("request_id")
        actor = Actor(type="job", label="job-token", ip=client_ip(request), request_id=request_id)
        trigger = "token"
    runner.job(name)  # 404 before anything starts
    started: asyncio.Future[JobRun] = asyncio.get_running_loop().create_future()
    task = runner.submit(name, trigger=trigger, actor=actor, started=started)
    if not wait:
        # Answer once the run is recorded (or has failed to start, e.g. a 409 while it runs elsewhere).
        waiters: list[asyncio.Future[Any]] = [started, task]
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if started.done():
            response.status_code = 202
            return JobRunRead.of(started.result())
    run = await asyncio.shield(task)
    assert run is not None  # only scheduled runs (with a slot) come back empty
    return JobRunRead.of(run)
