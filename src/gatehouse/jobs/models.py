"""Jobs: their locks (leases and scheduled slots), their recorded runs, and the replicas serving the database."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from gatehouse.db.base import Base, UTCDateTime, utcnow


class JobLock(Base):
    """One row per job: who holds it (a replica, until `expires_at`) and the last scheduled slot that ran.

    Taken and released with single conditional UPDATEs, so it works the same on SQLite and PostgreSQL and a
    crashed holder's lease simply runs out.
    """

    __tablename__ = "job_lock"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str | None] = mapped_column(String(64))
    run_id: Mapped[int | None] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    acquired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_slot: Mapped[datetime | None] = mapped_column(UTCDateTime)


class JobRun(Base):
    """One run of a job: when, where, who asked, and what it did."""

    __tablename__ = "job_run"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job: Mapped[str] = mapped_column(String(64))
    trigger: Mapped[str] = mapped_column(String(16))  # schedule | api | token | cli
    requested_by: Mapped[str | None] = mapped_column(String(320))
    replica: Mapped[str] = mapped_column(String(64))
    slot: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="running")  # running | ok | failed
    counts: Mapped[str] = mapped_column(Text, default="{}")  # JSON: what the run removed, wrote or checked
    error: Mapped[str | None] = mapped_column(Text)


class ReplicaBeat(Base):
    """A serving process, refreshed every few seconds: how `backup restore` knows the database is in use."""

    __tablename__ = "replica"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    # The machine and process namespace it runs in (replicas.host_identity): where `pid` means this process.
    host_id: Mapped[str | None] = mapped_column(String(64))
    heartbeat_seconds: Mapped[float | None] = mapped_column(Float)  # it is stale after STALE_BEATS of these
    version: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


Index("ix_job_run_job_id", JobRun.job, JobRun.id)
