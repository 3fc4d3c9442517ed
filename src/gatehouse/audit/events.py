"""Audit events as types: each change or security event is a small frozen dataclass whose class names its action
and whose fields are its details, written through one `record(session, event, actor=...)` (audit/service.py).

Each domain defines its own events next to its service (e.g. accounts/events.py); every class registers
itself here by its action, so the catalogue (docs/audit.md, checked by tests/unit/test_docs.py) and the legacy
names below stay complete. An event that operators also watch live names a `feed_kind`: once its transaction has
committed, `record` publishes it on the live feed as well, from the same object.

Action names are `<object>.<what happened>` (`user.blocked`, `key.revoked`, `login.failed`). A few events were
stored under other names by earlier releases; their rows stay as they are (the hash chain covers the action), and
`LEGACY_ACTIONS` lets filters find them under either name.
"""

from __future__ import annotations

import dataclasses
from datetime import date, datetime
from typing import Any, ClassVar, cast, dataclass_transform

from gatehouse.audit.chain import PURGE_ACTION
from gatehouse.auth.actor import Actor

# Actions written by earlier releases -> the name the same event has now.
LEGACY_ACTIONS: dict[str, str] = {
    "signup": "user.signed_up",
    "logout": "session.ended",
    "rate_limits.changed": "rate_limit.changed",
    "job.run": "job.finished",
}
EVENTS: dict[str, type[Event]] = {}  # every event class, by action


def _plain(value: Any) -> Any:
    """A detail as JSON has it: times and days in ISO 8601."""
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


@dataclass_transform(kw_only_default=True, frozen_default=True)
class Event:
    """One audited change or security event. Subclasses set `action` (and `target_type`, and `target`, the field
    that holds the target's id, left out of the details); their annotated fields are its details. Every subclass
    is made a frozen, keyword-only dataclass."""

    action: ClassVar[str]
    target_type: ClassVar[str | None] = None
    target: ClassVar[str | None] = None
    feed_kind: ClassVar[str | None] = None  # mirrored on the live feed under this kind, after commit

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, kw_only=True)(cls)
        action = cls.__dict__.get("action")
        if action is None:
            return  # an intermediate base class
        if action in EVENTS or action in LEGACY_ACTIONS:
            raise TypeError(f"audit action {action!r} is defined twice ({EVENTS.get(action)} and {cls})")
        EVENTS[action] = cls

    def target_id(self) -> int | str | None:
        """The id of what the event is about (None: nothing in particular)."""
        return getattr(self, self.target) if self.target else None

    def details(self) -> dict[str, Any]:
        """What the audit row keeps of the event: its fields but the target, as JSON values."""
        return {
            field.name: _plain(getattr(self, field.name))
            for field in dataclasses.fields(cast(Any, self))
            if field.name != self.target
        }

    def feed_data(self, actor: Actor) -> dict[str, Any]:
        """What the live feed shows of it (events with a `feed_kind`): by default the target, the details and
        who did it."""
        data: dict[str, Any] = {f"{self.target_type}_id": self.target_id()} if self.target_type else {}
        return {**data, **self.details(), "by": actor.label}


def canonical_action(action: str) -> str:
    """The current name of an action (a stored legacy name, or already current)."""
    return LEGACY_ACTIONS.get(action, action)


def stored_names(action: str) -> set[str]:
    """Every name rows of this action may be stored under (the current one and its legacy one)."""
    current = canonical_action(action)
    return {current} | {old for old, new in LEGACY_ACTIONS.items() if new == current}


def stored_names_under(prefix: str) -> set[str]:
    """The legacy and current names that a prefix filter (e.g. `user.`) must also match exactly: legacy names
    whose current name starts with it, and current names whose legacy name does."""
    names: set[str] = set()
    for old, new in LEGACY_ACTIONS.items():
        if old.startswith(prefix) or new.startswith(prefix):
            names |= {old, new}
    return names


class AuditPurgedEvent(Event):
    """The oldest events were removed by the retention purge; the hash of the last one anchors what remains."""

    action = PURGE_ACTION
    last_purged_hash: str
    last_purged_id: int
    purged: int
    before: datetime
