"""The hash chain: each row's hash covers its content and the previous row's hash.

Editing a row changes its content (its hash no longer matches); deleting one leaves the next row's
`prev_hash` pointing at nothing; inserting one (even with a correct hash of its own) breaks the next row's
`prev_hash`. A retention purge records, as a chained `audit.purged` row, the hash of the last row it
removed: the oldest remaining row must point at exactly that hash, so what remains stays verifiable.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS = "0" * 64  # the prev_hash of the very first row
HASHED_FIELDS = (
    "created_at",
    "actor_type",
    "actor_id",
    "actor_key_id",
    "actor_label",
    "client_ip",
    "action",
    "target_type",
    "target_id",
    "details",
    "request_id",
)
PURGE_ACTION = "audit.purged"


def canonical_details(details: dict[str, Any] | None) -> str:
    """Details as canonical JSON (sorted keys), the form that is stored and hashed."""
    return orjson.dumps(details or {}, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS).decode()


def _timestamp(value: datetime) -> str:
    # Microseconds, UTC: the precision both SQLite and PostgreSQL store, so a re-read row hashes the same.
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(prev_hash: str, fields: dict[str, Any]) -> str:
    """The hash of a row with these fields after `prev_hash`."""
    material: dict[str, Any] = {}
    for name in HASHED_FIELDS:
        value = fields.get(name)
        material[name] = _timestamp(value) if isinstance(value, datetime) else value
    return hashlib.sha256(prev_hash.encode() + b"\n" + orjson.dumps(material, option=orjson.OPT_SORT_KEYS)).hexdigest()


@dataclass(frozen=True)
class Break:
    """Where the chain is broken, and how."""

    row_id: int
    reason: str


class Verifier:
    """Checks rows one at a time, in id order, so any number of rows verifies in constant memory."""

    def __init__(self, anchors: Iterable[str]) -> None:
        self.anchors = {GENESIS, *anchors}
        self.previous: Any = None
        self.count = 0

    def check(self, row: Any) -> Break | None:
        """The break at this row, if any."""
        self.count += 1
        fields = {name: getattr(row, name) for name in HASHED_FIELDS}
        if row_hash(row.prev_hash, fields) != row.hash:
            return Break(row.id, "its content does not match its hash: the row was edited")
        if self.previous is None:
            if row.prev_hash not in self.anchors:
                return Break(
                    row.id,
                    "rows before it are missing: they were deleted, and no audit.purged record accounts for them",
                )
        elif row.prev_hash != self.previous.hash:
            return Break(
                row.id,
                f"it does not follow row {self.previous.id}: a row between them was deleted, or this one was inserted",
            )
        self.previous = row
        return None

    def finish(self, head_id: int | None, head_hash: str | None) -> Break | None:
        """The chain must end where the head (updated with every append) says it does."""
        last_id = self.previous.id if self.previous is not None else None
        last_hash = self.previous.hash if self.previous is not None else None
        if head_id is None:
            return None if last_id is None else Break(last_id, "rows exist but the chain head is missing")
        if last_id != head_id or last_hash != head_hash:
            return Break(
                head_id,
                f"the newest row should be {head_id}, but the chain ends at "
                f"{last_id if last_id is not None else 'no row'}: rows at the end were deleted "
                "or added without the head",
            )
        return None


def purge_anchor(details: str) -> str | None:
    """The hash recorded by an audit.purged row (the last row it removed)."""
    value = orjson.loads(details).get("last_purged_hash")
    return value if isinstance(value, str) else None
