"""The secrets this test run uses, and the server logs it produced: when the run ends, no log may hold one.

`remember(value, what)` registers a password, key, token or message text; tests/support/server.py registers each
server's log file; tests/conftest.py's pytest_sessionfinish calls `leaks()` and fails the run on any finding.
"""

from __future__ import annotations

from pathlib import Path

MIN_LENGTH = 8  # shorter values would match by chance
_secrets: dict[str, str] = {}  # value -> what it is
_logs: list[Path] = []


def remember(value: str, what: str) -> str:
    """Register a value no log line may contain; returns it, for `PASSWORD = remember("...", "a password")`."""
    if len(value) >= MIN_LENGTH:
        _secrets.setdefault(value, what)
    return value


def watch_log(path: Path) -> None:
    """Register a file a server writes its log to."""
    _logs.append(path)


def _suite_defaults() -> None:
    from tests.e2e.conftest import UPSTREAM_KEY
    from tests.support.server import ADMIN_KEY, ADMIN_PASSWORD, JWT_SECRET

    remember(ADMIN_PASSWORD, "the bootstrap admin's password (ADMIN_PASSWORD)")
    remember(ADMIN_KEY, "the bootstrap admin's API key (ADMIN_KEY)")
    remember(JWT_SECRET, "JWT_SECRET")
    remember(UPSTREAM_KEY, "the fake upstream's API key (UPSTREAM_KEY)")


def leaks() -> list[str]:
    """Where a registered secret appears in a registered log: one "file:line: what" per finding."""
    _suite_defaults()
    findings: list[str] = []
    for path in dict.fromkeys(_logs):
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            continue
        for value, what in _secrets.items():
            position = text.find(value)  # one scan of the file per secret; the line number only when found
            if position >= 0:
                findings.append(f"{path}:{text.count(chr(10), 0, position) + 1}: {what}")
    return findings
