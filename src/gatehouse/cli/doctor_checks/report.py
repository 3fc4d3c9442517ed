"""What `gatehouse doctor` finds: one Check per item of the production checklist, and the report of them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from gatehouse import __version__


class Status(StrEnum):
    PASS = "PASS"  # noqa: S105 - a status, not a password
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"  # not applicable here (e.g. no https URL to check): never makes the result worse


# How bad each status is: the report's worst is the highest.
SEVERITY = {Status.SKIP: 0, Status.PASS: 1, Status.WARN: 2, Status.FAIL: 3}
# The exit code of `gatehouse doctor` for the worst status (only SKIPs count as passing).
EXIT_CODES = {Status.SKIP: 0, Status.PASS: 0, Status.WARN: 1, Status.FAIL: 2}


@dataclass(frozen=True)
class Check:
    """One finding: its name (stable, for automation), status, a one-line summary and, unless PASS, the fix."""

    name: str
    status: Status
    summary: str
    fix: str = ""
    seconds: float | None = None  # how long a network check took, when it made one

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON-ready values."""
        data: dict[str, Any] = {"name": self.name, "status": self.status.value, "summary": self.summary}
        data["fix"] = self.fix or None
        data["seconds"] = None if self.seconds is None else round(self.seconds, 3)
        return data


def passed(name: str, summary: str, seconds: float | None = None) -> Check:
    """A PASS."""
    return Check(name, Status.PASS, summary, seconds=seconds)


def warned(name: str, summary: str, fix: str, seconds: float | None = None) -> Check:
    """A WARN, with its fix."""
    return Check(name, Status.WARN, summary, fix, seconds)


def failed(name: str, summary: str, fix: str, seconds: float | None = None) -> Check:
    """A FAIL, with its fix."""
    return Check(name, Status.FAIL, summary, fix, seconds)


def skipped(name: str, summary: str) -> Check:
    """A SKIP: the check does not apply."""
    return Check(name, Status.SKIP, summary)


@dataclass
class DoctorReport:
    """Every check doctor ran, in a stable order, and the worst of them."""

    checks: list[Check] = field(default_factory=list)
    version: str = __version__
    seconds: float = 0.0  # how long the whole run took

    @property
    def worst(self) -> Status:
        """The worst status found (SKIP when nothing ran or everything was skipped)."""
        return max((check.status for check in self.checks), key=SEVERITY.__getitem__, default=Status.SKIP)

    @property
    def exit_code(self) -> int:
        """0 when everything passed (or was skipped), 1 for a WARN, 2 for a FAIL."""
        return EXIT_CODES[self.worst]

    def by_name(self, name: str) -> Check | None:
        """The check of that name, if it ran."""
        return next((check for check in self.checks if check.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """The document `gatehouse doctor --json` prints."""
        return {
            "version": self.version,
            "worst": self.worst.value,
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "checks": [check.as_dict() for check in self.checks],
        }
