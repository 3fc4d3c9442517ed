"""The audit events of jobs (docs/audit.md)."""

from __future__ import annotations

from typing import Any

from gatehouse.audit.events import Event


class JobFinishedEvent(Event):
    """A job run ended (status ok or failed): where it ran, who asked, what it did or why it failed."""

    action = "job.finished"
    target_type = "job"
    target = "job"
    job: str
    run_id: int
    trigger: str
    replica: str
    status: str
    counts: dict[str, Any]
    error: str | None
    slot: str | None
