"""The job runner: runs the jobs it is given, on request and on their schedules, one replica at a time for the
exclusive ones (jobs/lease.py), following each schedule (jobs/scheduler.py).

Every run is a `job_run` row (start, end, status, counts, error) and a chained `job.finished` audit event. The
runner knows no domain: each domain defines its jobs (its scheduled.py) and runtime.py hands them over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.audit.service import record
from gatehouse.auth.actor import Actor
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import JOB_LAST_SUCCESS, JOB_RUNS, JOB_SCHEDULED
from gatehouse.core.tasks import every, logged
from gatehouse.db.base import utcnow
from gatehouse.jobs import lease, runs, scheduler
from gatehouse.jobs.errors import JobNotFound, JobNotHere, JobRunning
from gatehouse.jobs.events import JobFinishedEvent
from gatehouse.jobs.job import Job, JobContext
from gatehouse.jobs.lease import LEASE_SECONDS, Holder
from gatehouse.jobs.models import JobRun
from gatehouse.settings import Settings

log = get_logger("gatehouse.jobs")
METRICS_REFRESH_SECONDS = 60.0


class JobRunner:
    """Runs jobs on request and on their schedules, one replica at a time for exclusive jobs."""

    def __init__(
        self,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        replica: str,
        jobs: Iterable[Job],
        clock: Callable[[], datetime] = utcnow,
        lease_seconds: float = LEASE_SECONDS,
    ) -> None:
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.replica = replica
        self.jobs = {job.name: job for job in jobs}
        self._clock = clock
        self._lease = timedelta(seconds=lease_seconds)
        self._schedulers: list[asyncio.Task[None]] = []
        self._runs: set[asyncio.Task[JobRun | None]] = set()

    def job(self, name: str) -> Job:
        """The job called `name`, or a 404 listing the known ones."""
        job = self.jobs.get(name)
        if job is None:
            raise JobNotFound(f"No job {name!r}: the jobs are {', '.join(sorted(self.jobs))}.", param="name")
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
                follow = scheduler.follow(job, sessionmaker=self.sessionmaker, clock=self._clock, run_slot=self._slot)
                self._schedulers.append(asyncio.create_task(follow, name=f"gatehouse-job-{job.name}"))

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
            for name, finished in await runs.last_successes(session):
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

    async def _slot(self, job: Job, slot: datetime) -> JobRun | None:
        return await self.run(job.name, trigger="schedule", actor=Actor.job(job.name), slot=slot)

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
        if job.function is None:
            raise JobNotHere(job.in_server_only or f"The {job.name} job cannot run here.")
        run = await self._begin(job, trigger=trigger, actor=actor, slot=slot)
        if run is None:
            return None
        if started is not None and not started.done():
            started.set_result(run)
        log.info("job_started", job=job.name, run_id=run.id, trigger=trigger)
        renewer: asyncio.Task[str] | None = None
        if job.exclusive:
            renewer = asyncio.create_task(self._renew(job, run.id))
        context = JobContext(self.settings, self.sessionmaker, actor)
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
            error = scheduler.error_text(exc)
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
                await lease.ensure_row(session, job.name)
                await lease.fail_abandoned(session, job.name, now)
                taken = await lease.take(session, job.name, replica=self.replica, now=now, lease=self._lease, slot=slot)
                if not taken:
                    if slot is not None:
                        return None
                    raise self._running(job, await lease.holder(session, job.name, now))
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
                await lease.attach_run(session, job.name, replica=self.replica, run_id=run.id)
        return run

    @staticmethod
    def _running(job: Job, holder: Holder | None) -> JobRunning:
        where = f" on replica {holder.replica}" if holder else ""
        since = f" since {holder.since:%Y-%m-%d %H:%M:%S} UTC" if holder and holder.since else ""
        raised = f" (run {holder.run_id})" if holder and holder.run_id else ""
        return JobRunning(
            f"The {job.name} job is already running{where}{since}{raised}: "
            "wait for it to finish (GET /admin/jobs shows its progress), then run it again if needed."
        )

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
                    kept = await lease.renew(
                        session, job.name, replica=self.replica, run_id=run_id, until=self._clock() + self._lease
                    )
            except Exception as exc:
                log.warning("job_lease_renewal_failed", job=job.name, error=scheduler.error_text(exc))
                continue
            if not kept:
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
            event = JobFinishedEvent(
                job=job.name,
                run_id=run.id,
                trigger=run.trigger,
                replica=self.replica,
                status=run.status,
                counts=counts,
                error=error,
                slot=run.slot.isoformat() if run.slot else None,
            )
            await record(session, event, actor=actor)
            if job.exclusive:
                await lease.release(session, job.name, replica=self.replica, run_id=run.id)

    # --- reading ----------------------------------------------------------------------------------

    async def holder(self, session: AsyncSession, name: str) -> Holder | None:
        """Who holds the job's lock now (None: nobody, or a lease that ran out)."""
        return await lease.holder(session, name, self._clock())

    def next_run(self, job: Job) -> datetime | None:
        """When the job's schedule runs it next (None: not scheduled here)."""
        return job.schedule.next_after(self._clock()) if job.schedule is not None else None
