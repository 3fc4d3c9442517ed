"""The upstreams' job: `probe`, every upstream probed now (health and model discovery), on the replica that runs
it. Each replica also probes on its own every UPSTREAM_PROBE_SECONDS (upstreams/registry.py)."""

from __future__ import annotations

from typing import Any

from gatehouse.jobs.job import Job, JobContext, JobFunction
from gatehouse.settings import Settings
from gatehouse.upstreams.registry import UpstreamRegistry

IN_SERVER_ONLY = (
    "Upstream health is each serving replica's own: run the probe on a server with "
    "POST /admin/jobs/probe/run (it probes on the replica that answers)."
)


def _probe(registry: UpstreamRegistry) -> JobFunction:
    async def probe(_context: JobContext) -> dict[str, Any]:
        await registry.probe_all()
        states: dict[str, int] = {}
        for upstream in registry.upstreams.values():
            states[upstream.health.state.value] = states.get(upstream.health.state.value, 0) + 1
        return {"upstreams": len(registry.upstreams), **states}

    return probe


def probe_job(settings: Settings, registry: UpstreamRegistry | None) -> Job:
    """The `probe` job of this process (`registry` None: the CLI, where it cannot run)."""
    probe_every = settings.upstream_probe_seconds or settings.model_refresh_seconds

    return Job(
        "probe",
        "Probes every upstream now (health and model discovery) on the replica that runs it.",
        _probe(registry) if registry is not None else None,
        schedule_note=f"every {probe_every:g} s on each replica" if probe_every else None,
        exclusive=False,
        in_server_only=IN_SERVER_ONLY,
    )
