"""Routes: /admin/jobs (list, history) and /admin/jobs/{name}/run (an admin, or X-Job-Token for a scheduler)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from gatehouse.auth.access import PRINCIPAL_SCOPE_KEY, require
from gatehouse.auth.actor import Actor, actor_for, client_ip, request_id_of
from gatehouse.auth.roles import Role
from gatehouse.core.components import provided
from gatehouse.deps import SessionDep
from gatehouse.errors import errors
from gatehouse.jobs import runs, service
from gatehouse.jobs.errors import JobNotFound, JobRunning
from gatehouse.jobs.runner import JobRunner
from gatehouse.jobs.schemas import JobHolder, JobList, JobRead, JobRunPage, JobRunRead, ReplicaRead

router = APIRouter(prefix="/admin/jobs", tags=["jobs"])
MAX_ID = 2**63 - 1  # job_run ids are BIGINT
JOB_TOKEN_HEADER = "x-job-token"  # noqa: S105 (a header name)
RunnerDep = Annotated[JobRunner, provided(JobRunner)]
JobName = Annotated[str, Path(max_length=64, description="purge, backup, probe or maintain")]


@router.get("", response_model=JobList, dependencies=[require(Role.MONITOR)])
async def list_jobs(runner: RunnerDep, session: SessionDep) -> JobList:
    """Every job: its schedule and next run, who runs it now, its last run; and the replicas serving."""
    found = await service.overview(session, runner)
    jobs = [
        JobRead(
            name=state.job.name,
            description=state.job.description,
            schedule=state.job.schedule.text if state.job.schedule else state.job.schedule_note,
            next_run=state.next_run,
            one_replica_at_a_time=state.job.exclusive,
            running=JobHolder(replica=state.holder.replica, run_id=state.holder.run_id, since=state.holder.since)
            if state.holder
            else None,
            last_run=JobRunRead.of(state.last_run) if state.last_run else None,
        )
        for state in found.jobs
    ]
    return JobList(jobs=jobs, replicas=[ReplicaRead.model_validate(beat) for beat in found.replicas])


@router.get("/runs", response_model=JobRunPage, dependencies=[require(Role.MONITOR)])
async def job_runs(
    session: SessionDep,
    job: Annotated[str | None, Query(max_length=64, description="Only this job's runs.")] = None,
    before: Annotated[
        int | None, Query(ge=1, le=MAX_ID, description="Cursor: the `next_cursor` of the previous page.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobRunPage:
    """Recorded runs, newest first."""
    rows = await runs.list_runs(session, job=job, before_id=before, limit=limit + 1)
    page = rows[:limit]
    return JobRunPage(items=[JobRunRead.of(r) for r in page], next_cursor=page[-1].id if len(rows) > limit else None)


def _caller(request: Request) -> tuple[Actor, str]:
    """Who asks for the run, and how: an admin (`api`), or a scheduler holding JOB_TOKEN (`token`)."""
    principal = request.scope.get(PRINCIPAL_SCOPE_KEY)
    if principal is not None:
        return actor_for(request, principal), "api"
    token_holder = Actor(type="job", label="job-token", ip=client_ip(request), request_id=request_id_of(request))
    return token_holder, "token"


@router.post(
    "/{name}/run",
    response_model=JobRunRead,
    responses=errors(JobNotFound, JobRunning)
    | {202: {"description": "Started (wait=false): poll GET /admin/jobs/runs."}},
    dependencies=[require(Role.ADMIN, token_header=(JOB_TOKEN_HEADER, "job_token"))],
)
async def run_job(
    request: Request,
    response: Response,
    runner: RunnerDep,
    name: JobName,
    wait: Annotated[bool, Query(description="Answer when the run has finished (default), or at once with 202.")] = True,
) -> JobRunRead:
    """Run a job now, on this replica (an exclusive job refuses with 409 while it runs anywhere)."""
    actor, trigger = _caller(request)
    run, finished = await service.run_now(runner, name, trigger=trigger, actor=actor, wait=wait)
    if not finished:
        response.status_code = 202
    return JobRunRead.of(run)
