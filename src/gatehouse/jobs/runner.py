"""The job runner: the retention purge, scheduled backups and on-demand upstream probes.

A job that changes shared data runs on one replica at a time. The lock is a row of `job_lock` taken with one
conditional UPDATE (a free lock, or a lease that ran out), so it works alike on SQLite and PostgreSQL, and a
crashed holder's lease expires instead of blocking the job forever. A scheduled run also names its slot (the
scheduled time, the same on every replica), and the same UPDATE takes the slot only if no replica took it
already: with any number of replicas, each slot runs once. A slot missed while no replica was up runs at the
next start; a database seen for the first time only records the current slot.

Every run is a `job_run` row (start, end, status, counts, error) and a chained `job.run` audit event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import JOB_LAST_SUCCESS, JOB_RUNS, JOB_SCHEDULED
from gatehouse.core.schedule import Schedule, parse_schedule
from gatehouse.core.tasks import every, logged
from gatehouse.db.base import utcnow
from gatehouse.errors import Conflict, NotFound
from gatehouse.jobs.models import JobLock, JobRun
from gatehouse.settings import Settings

if TYPE_CHECKING:
    from gatehouse.limits.ratelimit import RateLimiter
    from gatehouse.upstreams.registry import UpstreamRegistry

log = get_logger("gatehouse.jobs")
LEASE_SECONDS = 60.0  # a holder renews its lease every LEASE_SECONDS / 4 while the job runs
SCHEDULER_TICK_SECONDS = 60.0  # the longest a scheduler sleeps before looking at the clock again
RETRY_SECONDS = 30.0  # a slot found locked by a manual run is tried again after this long
ERROR_CHARS = 1000
METRICS_REFRESH_SECONDS = 60.0


@dataclass(frozen=True)
class JobContext:
    """What a job gets: the settings, a database, who asked, and (inside a server) the upstreams and rate limiter."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    actor: Actor
    upstreams: UpstreamRegistry | None = None
    rate_limiter: RateLimiter | None = None


JobFunction = Callable[[JobContext], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Job:
    """A named job; `exclusive` ones hold the database lock while they run."""

    name: str
    description: str
    function: JobFunction
    schedule: Schedule | None = None
    schedule_note: str | None = None  # how a job scheduled elsewhere runs (the probes)
    exclusive: bool = True
    in_server_only: str | None = None  # why it cannot run outside a serving process (the CLI)


async def _purge(context: JobContext) -> dict[str, Any]:
    from gatehouse.jobs.purge import purge

    return await purge(context.settings, context.sessionmaker, actor=context.actor, rate_limiter=context.rate_limiter)


async def _backup(context: JobContext) -> dict[str, Any]:
    from gatehouse.backups.service import create_backup

    manifest = await create_backup(context.settings, encrypt=bool(context.settings.backup_key.get_secret_value()))
    return manifest.counts()


async def _probe(context: JobContext) -> dict[str, Any]:
    registry = context.upstreams
    if registry is None:
        raise RuntimeError("the probe runs in a serving process only")
    await registry.probe_all()
    states: dict[str, int] = {}
    for upstream in registry.upstreams.values():
        states[upstream.health.state.value] = states.get(upstream.health.state.value, 0) + 1
    return {"upstreams": len(registry.upstreams), **states}


def build_jobs(settings: Settings) -> dict[str, Job]:
    """Every job, with its schedule from the settings."""
    probe_every = settings.upstream_probe_seconds or settings.model_refresh_seconds
    return {
        job.name: job
        for job in (
            Job(
                "purge",
                "Removes audit events, request-log rows and other data past retention "
                f"(AUDIT_RETENTION_DAYS={settings.audit_retention_days}, "
                f"REQUEST_LOG_RETENTION_DAYS={settings.request_log_retention_days}; 0 keeps forever).",
                _purge,
                parse_schedule(settings.purge_schedule) if settings.purge_schedule else None,
            ),
            Job(
                "backup",
                f"Backs the database up into BACKUP_DIR, keeping {settings.backup_keep} generations"
                + (", encrypted (BACKUP_KEY)." if settings.backup_key.get_secret_value() else ", unencrypted."),
                _backup,
                parse_schedule(settings.backup_schedule) if settings.backup_schedule else None,
            ),
            Job(
                "probe",
                "Probes every upstream now (health and model discovery) on the replica that runs it.",
                _probe,
                schedule_note=f"every {probe_every:g} s on each replica" if probe_every else None,
                exclusive=False,
                in_server_only="Upstream health is each serving replica's own: run the probe on a server with "
                "POST /admin/jobs/probe/run (it probes on the replica that answers).",
            ),
        )
    }


def _error_text(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}"[:ERROR_CHARS] if message else type(exc).__name__


@dataclass(frozen=True)
class Holder:
    """Who holds a job's lock right now."""

    replica: str
    run_id: int | None
    since: datetime | None


class JobRunner:
    """Runs jobs on request and on their schedules, one replica at a time for exclusive jobs."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        replica: str,
        upstreams: UpstreamRegistry | None = None,
        rate_limiter: RateLimiter | None = None,
        clock: Callable[[], datetime] = utcnow,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.replica = replica
        self.upstreams = upstreams
        self.rate_limiter = rate_limiter
        self.jobs = build_jobs(settings)
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._schedulers: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[JobRun | None]] = set()

    def job(self, name: str) -> Job:
        """The job called `name`, or a 404 listing the known ones."""
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"No job {name!r}: the jobs are {', '.join(sorted(self.jobs))}.", param="name")
        return job

    # --- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start a scheduler for every scheduled job, and publish each job's schedule and newest success."""
        for job in self.jobs.values():
            JOB_SCHEDULED.labels(job_name=job.name).set(job.schedule.period.total_seconds() if job.schedule else 0)
            for status in ("ok", "failed"):
                JOB_RUNS.labels(job_name=job.name, status=status)  # every series exists from the start, at 0
        # Metrics only: a failure is never a reason not to start, nor to stop refreshing.
        await logged(self.refresh_metrics, log=log, event="job_metrics_failed")
        refresh = every(METRICS_REFRESH_SECONDS, self.refresh_metrics, log=log, event="job_metrics_failed")
        self._schedulers.append(asyncio.create_task(refresh, name="gatehouse-job-metrics"))
        for job in self.jobs.values():
            if job.schedule is not None:
                self._schedulers.append(asyncio.create_task(self._schedule(job), name=f"gatehouse-job-{job.name}"))

    async def close(self) -> None:
        """Stop the schedulers, then interrupt runs still going (each is recorded as failed, its lock released)."""
        for task in self._schedulers:
            task.cancel()
        for run in list(self._runs):
            run.cancel()
        await asyncio.gather(*self._schedulers, return_exceptions=True)
        await asyncio.gather(*self._runs, return_exceptions=True)
        self._schedulers.clear()

    async def refresh_metrics(self) -> None:
        """Publish each job's newest success from the database (runs by other replicas and the CLI included)."""
        async with self.sessionmaker() as session:
            for name, finished in await self.last_successes(session):
                if name in self.jobs and finished is not None:
                    JOB_LAST_SUCCESS.labels(job_name=name).set(finished.timestamp())

    # --- running ----------------------------------------------------------------------------------

    def submit(
        self, name: str, *, trigger: str, actor: Actor, started: asyncio.Future[JobRun] | None = None
    ) -> asyncio.Task[JobRun | None]:
        """Start a run in the background (it outlives the request that asked); the task's result is its run.

        `started`, when given, gets the run as soon as it is recorded, before the job itself has finished.
        """
        job = self.job(name)
        task = asyncio.create_task(self.run(job.name, trigger=trigger, actor=actor, started=started))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)
        return task

    async def run(
        self,
        name: str,
        *,
        trigger: str,
        actor: Actor,
        slot: datetime | None = None,
        started: asyncio.Future[JobRun] | None = None,
    ) -> JobRun | None:
        """Run a job now and return its recorded run.

        An exclusive job that is running elsewhere is a Conflict (409), except for a scheduled run, which
        returns None when its slot has been taken (or is held) by another replica.
        """
        job = self.job(name)
        if job.in_server_only and self.upstreams is None:
            raise Conflict(job.in_server_only)
        run = await self._begin(job, trigger=trigger, actor=actor, slot=slot)
        if run is None:
            return None
        if started is not None and not started.done():
            started.set_result(run)
        log.info("job_started", job=job.name, run_id=run.id, trigger=trigger)
        renewer: asyncio.Task[str] | None = None
        if job.exclusive:
            renewer = asyncio.create_task(self._renew(job, run.id))
        context = JobContext(self.settings, self.sessionmaker, actor, self.upstreams, self.rate_limiter)
        counts: dict[str, Any] = {}
        error: str | None = None
        lease_lost: str | None = None
        try:
            counts = await job.function(context)
        except asyncio.CancelledError:
            error = "interrupted: the process stopped before the job finished"
            await asyncio.shield(self._finish(job, run, actor, counts, error))
            raise
        except Exception as exc:
            error = _error_text(exc)
            log.warning("job_failed", job=job.name, run_id=run.id, error=error)
        finally:
            if renewer is not None:
                if renewer.done() and not renewer.cancelled() and renewer.exception() is None:
                    lease_lost = renewer.result()
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
        # Shielded: a shutdown arriving now must not roll back the record of a run that did its work.
        await asyncio.shield(self._finish(job, run, actor, counts, error or lease_lost))
        log.info("job_finished", job=job.name, run_id=run.id, status=run.status, counts=counts)
        return run

    async def _begin(self, job: Job, *, trigger: str, actor: Actor, slot: datetime | None) -> JobRun | None:
        """Take the lock (and the slot) and record the run, in one transaction; None if the slot is taken."""
        now = self._clock()
        async with self.sessionmaker() as session, session.begin():
            if job.exclusive:
                await self._ensure_lock_row(session, job.name)
                await self._fail_abandoned(session, job.name, now)
                taken = update(JobLock).where(
                    JobLock.name == job.name, (JobLock.holder.is_(None)) | (JobLock.expires_at < now)
                )
                values: dict[str, Any] = {"holder": self.replica, "acquired_at": now, "expires_at": now + self._lease}
                if slot is not None:
                    taken = taken.where(JobLock.last_slot.is_(None) | (JobLock.last_slot < slot))
                    values["last_slot"] = slot
                result = await session.execute(taken.values(**values))
                if not getattr(result, "rowcount", 0):
                    if slot is not None:
                        return None
                    holder = await self.holder(session, job.name)
                    where = f" on replica {holder.replica}" if holder else ""
                    since = f" since {holder.since:%Y-%m-%d %H:%M:%S} UTC" if holder and holder.since else ""
                    raised = f" (run {holder.run_id})" if holder and holder.run_id else ""
                    raise Conflict(
                        f"The {job.name} job is already running{where}{since}{raised}: "
                        "wait for it to finish (GET /admin/jobs shows its progress), then run it again if needed.",
                        code="job_running",
                    )
            run = JobRun(
                job=job.name,
                trigger=trigger,
                requested_by=actor.label,
                replica=self.replica,
                slot=slot,
                started_at=now,
                status="running",
                counts="{}",
            )
            session.add(run)
            await session.flush()
            if job.exclusive:
                await session.execute(
                    update(JobLock)
                    .where(JobLock.name == job.name, JobLock.holder == self.replica)
                    .values(run_id=run.id)
                )
        return run

    async def _ensure_lock_row(self, session: AsyncSession, name: str, *, last_slot: datetime | None = None) -> None:
        builder = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
        await session.execute(
            builder(JobLock).values(name=name, last_slot=last_slot).on_conflict_do_nothing(index_elements=["name"])
        )

    async def _fail_abandoned(self, session: AsyncSession, name: str, now: datetime) -> None:
        """A lease that ran out: its holder died mid-run. Say so on that run, rather than leave it 'running'."""
        lock = (
            await session.execute(select(JobLock).where(JobLock.name == name, JobLock.expires_at < now))
        ).scalar_one_or_none()
        if lock is None or lock.holder is None or lock.run_id is None:
            return
        result = await session.execute(
            update(JobRun)
            .where(JobRun.id == lock.run_id, JobRun.status == "running")
            .values(
                status="failed",
                finished_at=lock.expires_at,
                error=f"abandoned: replica {lock.holder} stopped renewing its lease before the job finished",
            )
        )
        if getattr(result, "rowcount", 0):
            JOB_RUNS.labels(job_name=name, status="failed").inc()

    async def _renew(self, job: Job, run_id: int) -> str:
        """Extend the lease while the job runs, so no other replica takes it over.

        Returns (ending the renewals) if the lease was lost: it ran out while renewals failed and another replica
        took the lock. The job is not stopped halfway (half a purge or half a backup helps nobody), but its run
        is recorded as failed with the returned explanation, since another run may have overlapped it.
        """
        while True:
            await asyncio.sleep(self._lease.total_seconds() / 4)
            try:
                async with self.sessionmaker() as session, session.begin():
                    result = await session.execute(
                        update(JobLock)
                        .where(JobLock.name == job.name, JobLock.holder == self.replica, JobLock.run_id == run_id)
                        .values(expires_at=self._clock() + self._lease)
                    )
            except Exception as exc:
                log.warning("job_lease_renewal_failed", job=job.name, error=_error_text(exc))
                continue
            if not getattr(result, "rowcount", 0):
                log.error("job_lease_lost", job=job.name, run_id=run_id)
                return (
                    "lease lost: the lock could not be renewed in time and another replica took it over, "
                    "so another run may have overlapped this one"
                )

    async def _finish(self, job: Job, run: JobRun, actor: Actor, counts: dict[str, Any], error: str | None) -> None:
        """Record the outcome, audit it and release the lock, in one transaction."""
        run.finished_at = self._clock()
        run.status = "failed" if error else "ok"
        run.counts = orjson.dumps(counts).decode()
        run.error = error
        JOB_RUNS.labels(job_name=job.name, status=run.status).inc()
        if run.status == "ok":
            JOB_LAST_SUCCESS.labels(job_name=job.name).set(run.finished_at.timestamp())
        async with self.sessionmaker() as session, session.begin():
            await session.execute(
                update(JobRun)
                .where(JobRun.id == run.id)
                .values(finished_at=run.finished_at, status=run.status, counts=run.counts, error=error)
            )
            await record(
                session,
                actor=actor,
                action="job.run",
                target_type="job",
                target_id=job.name,
                details={
                    "run_id": run.id,
                    "trigger": run.trigger,
                    "replica": self.replica,
                    "status": run.status,
                    "counts": counts,
                    "error": error,
                    "slot": run.slot.isoformat() if run.slot else None,
                },
            )
            if job.exclusive:
                await session.execute(
                    update(JobLock)
                    .where(JobLock.name == job.name, JobLock.holder == self.replica, JobLock.run_id == run.id)
                    .values(holder=None, expires_at=None, run_id=None)
                )

    # --- schedules --------------------------------------------------------------------------------

    async def _schedule(self, job: Job) -> None:
        """Run `job` at each of its slots; on a database seen for the first time, only record the current slot."""
        assert job.schedule is not None
        schedule = job.schedule
        while True:
            try:
                current = schedule.latest(self._clock())
                async with self.sessionmaker() as session, session.begin():
                    await self._ensure_lock_row(session, job.name, last_slot=current)
                    await session.execute(  # a row made by a manual run before the job had a schedule
                        update(JobLock)
                        .where(JobLock.name == job.name, JobLock.last_slot.is_(None))
                        .values(last_slot=current)
                    )
                break
            except Exception as exc:
                log.warning("job_schedule_failed", job=job.name, error=_error_text(exc))
                await asyncio.sleep(RETRY_SECONDS)
        while True:
            now = self._clock()
            slot = schedule.latest(now)
            wait = min((schedule.next_after(now) - now).total_seconds(), SCHEDULER_TICK_SECONDS)
            try:
                if await self._slot_open(job.name, slot):
                    run = await self.run(job.name, trigger="schedule", actor=Actor.job(job.name), slot=slot)
                    if run is None and await self._slot_open(job.name, slot):
                        wait = min(wait, RETRY_SECONDS)  # held by a manual run: the slot is still to run
            except Exception as exc:
                log.warning("job_schedule_failed", job=job.name, error=_error_text(exc))
                wait = min(wait, RETRY_SECONDS)
            await asyncio.sleep(max(wait, 0.01))

    async def _slot_open(self, name: str, slot: datetime) -> bool:
        """Whether no replica has run (or is running) `slot` yet: one read, so idle ticks write nothing."""
        async with self.sessionmaker() as session:
            last = (await session.execute(select(JobLock.last_slot).where(JobLock.name == name))).scalar_one_or_none()
        return last is None or last < slot

    # --- reading ----------------------------------------------------------------------------------

    async def holder(self, session: AsyncSession, name: str) -> Holder | None:
        """Who holds the job's lock now (None: nobody, or a lease that ran out)."""
        lock = await session.get(JobLock, name, populate_existing=True)
        if lock is None or lock.holder is None or (lock.expires_at is not None and lock.expires_at < self._clock()):
            return None
        return Holder(lock.holder, lock.run_id, lock.acquired_at)

    def next_run(self, job: Job) -> datetime | None:
        """When the job's schedule runs it next (None: not scheduled here)."""
        return job.schedule.next_after(self._clock()) if job.schedule is not None else None

    async def last_successes(self, session: AsyncSession) -> list[tuple[str, datetime | None]]:
        """When each job last finished successfully."""
        query = select(JobRun.job, func.max(JobRun.finished_at)).where(JobRun.status == "ok").group_by(JobRun.job)
        return [(name, finished) for name, finished in (await session.execute(query)).all()]

    async def last_runs(self, session: AsyncSession) -> dict[str, JobRun]:
        """The newest run of each job."""
        newest = select(JobRun.job, func.max(JobRun.id).label("id")).group_by(JobRun.job).subquery()
        rows = (await session.execute(select(JobRun).join(newest, JobRun.id == newest.c.id))).scalars()
        return {run.job: run for run in rows}


async def list_runs(
    session: AsyncSession, *, job: str | None = None, before_id: int | None = None, limit: int = 50
) -> Sequence[JobRun]:
    """Recorded runs, newest first, optionally of one job, before a cursor."""
    query = select(JobRun).order_by(JobRun.id.desc()).limit(limit)
    if job:
        query = query.where(JobRun.job == job)
    if before_id is not None:
        query = query.where(JobRun.id < before_id)
    return (await session.execute(query)).scalars().all()
