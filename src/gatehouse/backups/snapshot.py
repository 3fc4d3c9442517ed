"""What the two database sides (backups/sqlite.py, backups/postgres.py) share: what a database holds, and
the progress callback of a long step."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

Progress = Callable[[int, int | None], None]  # (bytes done in the current step, its total when known)
VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class Snapshot:
    """What a database (or a copy of one) holds: its migration revision(s) and the rows of each table."""

    revision: tuple[str, ...]
    rows: dict[str, int]
