"""What the retention purge removes of rate limits: this process's empty windows (Redis windows expire by
themselves)."""

from __future__ import annotations

from typing import Any

from gatehouse.jobs.purge import PurgeContext, PurgeStep
from gatehouse.limits.ratelimit import RateLimiter


def sweep_rate_limits(limiter: RateLimiter | None) -> PurgeStep:
    """The step for this process's limiter (none in the CLI: nothing to sweep there)."""

    async def sweep(_context: PurgeContext) -> dict[str, Any]:
        return {"rate_limit_windows": limiter.sweep() if limiter is not None else 0}

    return sweep
