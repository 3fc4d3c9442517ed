"""What a job is: a named async function with its description, schedule and how it runs; each domain defines
its own (its scheduled.py) and the composition root hands them to the runner."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.auth.actor import Actor
from gatehouse.core.schedule import Schedule
from gatehouse.settings import Settings


@dataclass(frozen=True)
class JobContext:
    """What a run gets: the settings, a database, and who asked."""

    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    actor: Actor


JobFunction = Callable[[JobContext], Awaitable[dict[str, Any]]]  # returns what the run did, as counts


@dataclass(frozen=True)
class Job:
    """A named job; `exclusive` ones hold the database lock while they run.

    `function` None: the job cannot run in this process (`in_server_only` says why, e.g. the probes in the CLI).
    """

    name: str
    description: str
    function: JobFunction | None
    schedule: Schedule | None = None
    schedule_note: str | None = None  # how a job scheduled elsewhere runs (the probes)
    exclusive: bool = True
    in_server_only: str | None = None  # why it cannot run outside a serving process (the CLI)
