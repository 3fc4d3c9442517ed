"""The audit events of accounts: users, API keys, console sessions, invites and groups (docs/audit.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from gatehouse.audit.events import Event

Change = dict[str, Any]  # {"before": ..., "after": ...}


class UserCreatedEvent(Event):
    """An account was created (by an administrator, the CLI or the bootstrap)."""

    action = "user.created"
    target_type = "user"
    target = "user_id"
    user_id: int
    email: str
    role: str
    messages_per_day: int | None = None
    tokens_per_day: int | None = None


class UserSignedUpEvent(Event):
    """Someone created their own account (with an invite, or as SIGNUP_MODE=open allows)."""

    action = "user.signed_up"
    target_type = "user"
    target = "user_id"
    user_id: int
    email: str
    role: str
    mode: str
    invite_id: int | None


class UserUpdatedEvent(Event):
    """An administrator changed a user; `changes` holds each changed field before and after."""

    action = "user.updated"
    target_type = "user"
    target = "user_id"
    user_id: int
    changes: dict[str, Change]


class UserRoleChangedEvent(Event):
    """A user's role changed (also in the user.updated event of the same change)."""

    action = "user.role_changed"
    target_type = "user"
    target = "user_id"
    user_id: int
    before: str
    after: str


class UserQuotaChangedEvent(Event):
    """A user's daily quotas changed: the changed ones, before and after (null: unlimited)."""

    action = "user.quota_changed"
    target_type = "user"
    target = "user_id"
    user_id: int
    messages_per_day: Change | None = None
    tokens_per_day: Change | None = None

    def details(self) -> dict[str, Any]:
        return {name: value for name, value in super().details().items() if value is not None}


class _StatusChanged(Event):
    target_type = "user"
    target = "user_id"
    user_id: int
    before: str
    after: str

    def feed_data(self, actor: Any) -> dict[str, Any]:
        return {"user_id": self.user_id, "by": actor.label}


class UserEnabledEvent(_StatusChanged):
    """A user was enabled again."""

    action = feed_kind = "user.enabled"


class UserDisabledEvent(_StatusChanged):
    """A user was disabled: their sessions ended and their keys stopped on every replica."""

    action = feed_kind = "user.disabled"


class UserBlockedEvent(Event):
    """A user was blocked, for good or until a time; the reason is an internal note."""

    action = feed_kind = "user.blocked"
    target_type = "user"
    target = "user_id"
    user_id: int
    reason: str
    until: datetime | None


class UserUnblockedEvent(Event):
    """A block was lifted; `was` holds its reason and end."""

    action = feed_kind = "user.unblocked"
    target_type = "user"
    target = "user_id"
    user_id: int
    was: dict[str, Any]

    def feed_data(self, actor: Any) -> dict[str, Any]:
        return {"user_id": self.user_id, "by": actor.label}


class KeyCreatedEvent(Event):
    """An API key was created (its prefix only: the key itself is never stored)."""

    action = "key.created"
    target_type = "key"
    target = "key_id"
    key_id: int
    prefix: str
    name: str
    user_id: int
    expires_at: datetime | None
    settings: dict[str, Any] | None = None  # the settings it was created with, when any (group, restrictions...)

    def details(self) -> dict[str, Any]:
        details = super().details()
        if self.settings is None:
            del details["settings"]
        return details


class KeySettingsChangedEvent(Event):
    """A key's settings changed (group, acts_for_users, allowed models, surfaces, networks, rate): `changes` holds
    each changed one before and after (null: no restriction)."""

    action = "key.settings_changed"
    target_type = "key"
    target = "key_id"
    key_id: int
    prefix: str
    name: str
    user_id: int
    changes: dict[str, Change]


class KeyRevokedEvent(Event):
    """An API key was revoked: every replica refuses it from the next request on."""

    action = "key.revoked"
    target_type = "key"
    target = "key_id"
    key_id: int
    prefix: str
    name: str
    user_id: int


class LoginSucceededEvent(Event):
    """A console login: a session was opened."""

    action = "login.succeeded"
    target_type = "user"
    target = "user_id"
    user_id: int


class LoginFailedEvent(Event):
    """A failed console login: wrong credentials, a lockout, or an account that may not log in. The attempted
    email is kept only when it names an account (people type passwords into the email field); `email_hash`
    groups attempts either way."""

    action = "login.failed"
    target_type = "user"
    target = "user_id"
    user_id: int | None
    email_hash: str
    reason: Literal["bad_credentials", "locked", "inactive"]
    email: str | None = None

    def details(self) -> dict[str, Any]:
        details = super().details()
        if self.email is None:
            del details["email"]
        return details


class PasswordChangedEvent(Event):
    """A user changed their own password; their other console sessions were ended."""

    action = "user.password_changed"
    target_type = "user"
    target = "user_id"
    user_id: int
    sessions_ended: int


class SessionEndedEvent(Event):
    """A console session was ended by its user (logout)."""

    action = "session.ended"
    target_type = "user"
    target = "user_id"
    user_id: int


class InviteCreatedEvent(Event):
    """An invite was created (its hash only is stored)."""

    action = "invite.created"
    target_type = "invite"
    target = "invite_id"
    invite_id: int
    email: str | None
    role: str
    max_uses: int
    expires_at: datetime | None


class InviteRevokedEvent(Event):
    """An invite was revoked: nobody can sign up with it any more."""

    action = "invite.revoked"
    target_type = "invite"
    target = "invite_id"
    invite_id: int
    email: str | None
    role: str
    uses: int
    max_uses: int


class InviteRedeemedEvent(Event):
    """An invite was used to sign up."""

    action = "invite.redeemed"
    target_type = "invite"
    target = "invite_id"
    invite_id: int
    user_id: int
    email: str
    uses: int
    max_uses: int


class GroupCreatedEvent(Event):
    """A group was created."""

    action = "group.created"
    target_type = "group"
    target = "group_id"
    group_id: int
    name: str
    description: str


class GroupRenamedEvent(Event):
    """A group was renamed."""

    action = "group.renamed"
    target_type = "group"
    target = "group_id"
    group_id: int
    before: str
    after: str


class GroupUpdatedEvent(Event):
    """A group's description changed."""

    action = "group.updated"
    target_type = "group"
    target = "group_id"
    group_id: int
    name: str
    description: Change


class GroupDeletedEvent(Event):
    """A group was deleted, with its memberships and access rules; `members` were its members, and revoked keys
    still bound to it were unbound (`unbound_revoked_keys`)."""

    action = "group.deleted"
    target_type = "group"
    target = "group_id"
    group_id: int
    name: str
    description: str
    members: list[int]
    unbound_revoked_keys: list[int]


class GroupMemberAddedEvent(Event):
    """A user joined a group."""

    action = "group.member_added"
    target_type = "group"
    target = "group_id"
    group_id: int
    group: str
    user_id: int


class GroupMemberRemovedEvent(Event):
    """A user left a group (removed by an administrator)."""

    action = "group.member_removed"
    target_type = "group"
    target = "group_id"
    group_id: int
    group: str
    user_id: int
