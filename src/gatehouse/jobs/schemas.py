"""Response shapes of /admin/jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict, Field

from gatehouse.jobs.models import JobRun


class JobRunRead(BaseModel):
    """One recorded run of a job."""

    id: int
    job: str
    trigger: str = Field(description="schedule, api (an admin), token (X-Job-Token) or cli")
    requested_by: str | None
    replica: str
    slot: datetime | None = Field(description="The scheduled time this run was for (scheduled runs only).")
    started_at: datetime
    finished_at: datetime | None
    status: str = Field(description="running, ok or failed")
    counts: dict[str, Any]
    error: str | None
    seconds: float | None

    @classmethod
    def of(cls, run: JobRun) -> JobRunRead:
        return cls(
            id=run.id,
            job=run.job,
            trigger=run.trigger,
            requested_by=run.requested_by,
            replica=run.replica,
            slot=run.slot,
            started_at=run.started_at,
            finished_at=run.finished_at,
            status=run.status,
            counts=orjson.loads(run.counts or "{}"),
            error=run.error,
            seconds=(run.finished_at - run.started_at).total_seconds() if run.finished_at else None,
        )


class JobHolder(BaseModel):
    replica: str
    run_id: int | None
    since: datetime | None


class JobRead(BaseModel):
    """A job: what it does, when it runs next, whether it runs now, and how its last run went."""

    name: str
    description: str
    schedule: str | None = Field(description="When it runs by itself (UTC); null: only when asked.")
    next_run: datetime | None
    one_replica_at_a_time: bool
    running: JobHolder | None
    last_run: JobRunRead | None


class ReplicaRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    host: str
    pid: int
    version: str
    started_at: datetime
    seen_at: datetime


class JobList(BaseModel):
    jobs: list[JobRead]
    replicas: list[ReplicaRead] = Field(description="The Gatehouse processes serving this database now.")


class JobRunPage(BaseModel):
    items: list[JobRunRead]
    next_cursor: int | None
