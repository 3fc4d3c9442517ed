"""Console pages of the Data section: the audit log, jobs and backups, exports (see web/pages.py for how a page
is declared). Each reads through the API as the viewer; each change is the browser calling the API."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gatehouse.auth.roles import Role
from gatehouse.web.pages import View, page

AUDIT_FILTERS = ("action", "actor_id", "target_type", "target_id", "since", "until", "before", "limit")
AUDIT_PAGE = 50  # events a page shows unless the viewer asks for another number
# The entities an export may hold (exports/entities.py), in the order the form offers them.
EXPORT_ENTITIES = ("users", "usage", "requests", "audit", "invites", "keys", "responses")


@page("/console/audit", title="Audit log", role=Role.ADMIN, section="Data", template="pages/audit.html")
async def audit(view: View) -> Mapping[str, Any]:
    """A page of audit events, newest first, filtered as the query says; the chain's check is a button."""
    filters = view.query(*AUDIT_FILTERS)
    events = await view.get("/admin/audit", {"limit": AUDIT_PAGE, **filters})
    return {"events": events, "filters": filters}


@page("/console/jobs", title="Jobs & backups", role=Role.MONITOR, section="Data", template="pages/jobs.html")
async def jobs(view: View) -> Mapping[str, Any]:
    """The jobs with their schedules and last runs, the recent runs, and the backups (damaged ones with their
    problem)."""
    return {
        "jobs": await view.get("/admin/jobs"),
        "runs": await view.get("/admin/jobs/runs", {"limit": 20}),
        "backups": await view.get("/admin/backups"),
        "can_run": view.can(Role.ADMIN),
    }


@page("/console/exports", title="Exports", role=Role.ADMIN, section="Data", template="pages/exports.html")
async def exports(view: View) -> Mapping[str, Any]:
    """The export form: masked by default; raw offered to superadmins only, with a reason."""
    return {"entities": EXPORT_ENTITIES, "can_raw": view.can(Role.SUPERADMIN)}
