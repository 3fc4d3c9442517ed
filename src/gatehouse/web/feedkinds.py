"""Every kind of event the live feed carries: a browser's EventSource hears a named event only when it listens
for that name, so the console's script is given this list rather than a copy of it."""

from __future__ import annotations

from functools import cache

from gatehouse.alerts.service import EVENT as BUDGET_THRESHOLD
from gatehouse.alerts.service import TEST_EVENT as ALERT_TEST
from gatehouse.audit.events import EVENTS
from gatehouse.core.redis_state import RESTORED, UNAVAILABLE
from gatehouse.gateway.streams.registry import ENDED, STARTED
from gatehouse.limits.ratelimit import HIT_EVENT

# Published straight to the feed (not mirrored from an audit event).
DIRECT = (
    STARTED,
    ENDED,
    "upstream.state",
    "upstream.drained",
    "quota.blocked",
    HIT_EVENT,
    UNAVAILABLE,
    RESTORED,
    BUDGET_THRESHOLD,
    ALERT_TEST,
    "gap",
)


@cache
def feed_kinds() -> str:
    """The kinds, comma-separated, for the page's `data-feed-kinds`."""
    mirrored = {event.feed_kind for event in EVENTS.values() if event.feed_kind}
    return ",".join(sorted(mirrored | set(DIRECT)))
