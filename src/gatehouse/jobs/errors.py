"""Job errors (docs/errors.md lists every code)."""

from __future__ import annotations

from gatehouse.errors import Conflict, NotFound


class JobNotFound(NotFound):
    """No job of this name (GET /admin/jobs lists them: purge, backup, probe)."""

    code = "not_found"


class JobRunning(Conflict):
    """The job is already running (on this or another replica): wait for it, then run it again if needed."""

    code = "job_running"


class JobNotHere(Conflict):
    """The job runs only in a serving process (the probes): ask a server with POST /admin/jobs/{name}/run."""

    code = "conflict"
