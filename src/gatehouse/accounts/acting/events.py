"""The audit events of front-ends acting for their users (docs/audit.md)."""

from __future__ import annotations

from gatehouse.audit.events import Event


class UserCreatedOnFirstSightEvent(Event):
    """A front-end's key (acts_for_users) named an unknown person whose email domain is in
    ACTS_FOR_USERS_CREATE_DOMAINS: their account was created (role user, the default quotas); the actor is that key."""

    action = feed_kind = "user.created_on_first_sight"
    target_type = "user"
    target = "user_id"
    user_id: int
    email: str
    role: str
    key_id: int | None
    messages_per_day: int | None = None
    tokens_per_day: int | None = None


class ActingRefusedEvent(Event):
    """A key that does not act for users named a person in a request (403 acting_not_allowed). Recorded at most once
    a minute per key on each replica: `refused` counts the refusals this row stands for. The value sent is kept as a
    hash, and the account it names when it names one."""

    action = feed_kind = "acting.refused"
    target_type = "key"
    target = "key_id"
    key_id: int | None
    header: str
    named_user_id: int | None
    named_hash: str
    refused: int
