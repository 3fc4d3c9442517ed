"""An upstream's health as this replica sees it: probe results, a circuit breaker, and the operator's override.

The effective state decides routing:
- an override wins: `down` and `drain` take the upstream out of routing (`drain` lets requests already on it
  finish), `up` keeps it in whatever the probes and the breaker say;
- otherwise an open breaker (too many consecutive failed requests) or a failed probe means `down`;
- a probe slower than UPSTREAM_DEGRADED_MS, or failed requests short of opening the breaker, mean `degraded`:
  still used, after the healthy upstreams of the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from gatehouse.db.base import utcnow


class State(StrEnum):
    UP = "up"
    DEGRADED = "degraded"
    DOWN = "down"
    DRAIN = "drain"  # only ever an override


class OverrideState(StrEnum):
    UP = "up"
    DOWN = "down"
    DRAIN = "drain"


@dataclass(frozen=True, slots=True)
class Override:
    """An operator's decision, stored with the upstream and shared by every replica."""

    state: OverrideState
    reason: str
    by: str | None
    at: datetime | None

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "reason": self.reason,
            "by": self.by,
            "at": self.at.isoformat() if self.at else None,
        }


@dataclass
class Health:
    """Probe results and the circuit breaker, for one upstream on this replica."""

    breaker_threshold: int  # consecutive failed requests that open the breaker; 0: never
    degraded_ms: float
    probed: State | None = None  # None until the first probe
    last_error: str | None = None
    latency_ms: float | None = None
    checked_at: datetime | None = None
    failures: int = 0  # consecutive failed requests
    breaker_open: bool = False
    override: Override | None = None

    @property
    def state(self) -> State:
        """The effective state (see the module docstring)."""
        if self.override is not None:
            return State(self.override.state.value)
        if self.breaker_open or self.probed is State.DOWN:
            return State.DOWN
        if self.probed is State.DEGRADED or self.failures:
            return State.DEGRADED
        return State.UP

    @property
    def usable(self) -> bool:
        """New requests may go here."""
        return self.state in (State.UP, State.DEGRADED)

    def probe_ok(self, latency_ms: float) -> None:
        """A probe answered: the breaker closes (the probe is what brings an upstream back)."""
        self.latency_ms = round(latency_ms, 1)
        self.checked_at = utcnow()
        if latency_ms > self.degraded_ms:
            self.probed = State.DEGRADED
            self.last_error = f"slow: the probe took {latency_ms:.0f} ms (over {self.degraded_ms:.0f} ms)"
        else:
            self.probed = State.UP
            self.last_error = None
        self.breaker_open = False
        self.failures = 0

    def probe_failed(self, error: str, latency_ms: float) -> None:
        self.probed = State.DOWN
        self.last_error = error
        self.latency_ms = round(latency_ms, 1)
        self.checked_at = utcnow()

    def request_ok(self) -> None:
        self.failures = 0

    def request_failed(self, error: str) -> bool:
        """Count a failed request; True when this one opened the breaker."""
        self.failures += 1
        self.last_error = error
        if self.breaker_threshold and not self.breaker_open and self.failures >= self.breaker_threshold:
            self.breaker_open = True
            self.last_error = f"circuit open after {self.failures} consecutive failures; last: {error}"
            return True
        return False

    def public(self) -> dict[str, Any]:
        return {
            "state": self.state.value,
            "probe": self.probed.value if self.probed else "unknown",
            "last_error": self.last_error,
            "latency_ms": self.latency_ms,
            "checked_at": self.checked_at.isoformat() if self.checked_at else None,
            "consecutive_failures": self.failures,
            "breaker_open": self.breaker_open,
            "override": self.override.public() if self.override else None,
        }
