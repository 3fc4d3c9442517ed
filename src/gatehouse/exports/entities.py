"""What an export holds: per entity its columns (and how each is masked), its keyset, its time column, and
which of its rows belong to one user. Secrets are simply not listed: no password, key or token hash.

Message contents (what stored responses hold: the items sent, the Response answered) are in raw exports only:
masking finds emails, phone numbers and addresses, not what else a conversation may give away (names, health,
a pasted secret), and nobody but its user may read a stored response through the API either."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from sqlalchemy import String, and_, cast, or_, select
from sqlalchemy.sql.elements import ColumnElement

from gatehouse.accounts.invites.models import Invite
from gatehouse.audit.models import AuditEvent
from gatehouse.auth.models import ApiKey, User
from gatehouse.gateway.models import RequestLog
from gatehouse.gateway.stored.models import StoredResponse
from gatehouse.limits.models import UsageCounter

EntityName = Literal["users", "usage", "requests", "audit", "invites", "keys", "responses"]
ENTITY_NAMES: tuple[str, ...] = get_args(EntityName)
PiiMode = Literal["masked", "raw"]
# nanos: an amount in billionths of PRICE_CURRENCY, written as a decimal number (a request's cost).
Kind = Literal["plain", "bool", "time", "email", "ip", "text", "json", "nanos"]


@dataclass(frozen=True)
class Field:
    """One exported column: its name, what is read, and how it is masked."""

    name: str
    column: Any
    kind: Kind = "plain"
    raw_only: bool = False  # left out of masked exports
    # Text about a user (their name, the note on their block): masked as text, and the local part of the email
    # in this column of the same row masked in it like in the email (`alice.smith` -> `al***`; a display name
    # defaults to it).
    name_beside: str | None = None


@dataclass(frozen=True)
class Entity:
    """One exported file: its columns, its keyset (unique, ascending), its time column and the user's rows."""

    name: str
    fields: tuple[Field, ...]
    keyset: tuple[str, ...]
    time_column: str | None
    of_user: Callable[[int, str], ColumnElement[bool]]
    batch_rows: int | None = None  # rows read at a time, when fewer than the writer's (large rows)

    def columns(self, pii_mode: PiiMode) -> tuple[Field, ...]:
        return tuple(f for f in self.fields if pii_mode == "raw" or not f.raw_only)

    def field(self, name: str) -> Field:
        return next(f for f in self.fields if f.name == name)


def audit_of_user(user_id: int, email: str) -> ColumnElement[bool]:
    """Audit events about a user: where they acted, or that target them, their keys or invites to their email."""
    their_keys = select(cast(ApiKey.id, String)).where(ApiKey.user_id == user_id)
    invites_to_them = select(cast(Invite.id, String)).where(Invite.email == email)
    return or_(
        AuditEvent.actor_id == user_id,
        and_(AuditEvent.target_type == "user", AuditEvent.target_id == str(user_id)),
        and_(AuditEvent.target_type == "key", AuditEvent.target_id.in_(their_keys)),
        and_(AuditEvent.target_type == "invite", AuditEvent.target_id.in_(invites_to_them)),
    )


ENTITIES: dict[str, Entity] = {
    e.name: e
    for e in (
        Entity(
            "users",
            (
                Field("id", User.id),
                Field("email", User.email, "email"),
                Field("display_name", User.display_name, "text", name_beside="email"),
                Field("role", User.role),
                Field("status", User.status),
                Field("has_password", User.password_hash.is_not(None), "bool"),
                Field("created_at", User.created_at, "time"),
                Field("updated_at", User.updated_at, "time"),
                Field("last_login_at", User.last_login_at, "time"),
                Field("messages_per_day", User.messages_per_day),
                Field("tokens_per_day", User.tokens_per_day),
                Field("blocked_at", User.blocked_at, "time"),
                Field("blocked_until", User.blocked_until, "time"),
                Field("block_reason", User.block_reason, "text", name_beside="email"),
                Field("blocked_by", User.blocked_by),
            ),
            keyset=("id",),
            time_column=None,  # the current state: a request row needs its user whatever the range
            of_user=lambda uid, _email: User.id == uid,
        ),
        Entity(
            "usage",
            (
                Field("user_id", UsageCounter.user_id),
                Field("day", UsageCounter.day),
                Field("messages", UsageCounter.messages),
                Field("tokens", UsageCounter.tokens),
                Field("reserved_tokens", UsageCounter.reserved_tokens),
                Field("updated_at", UsageCounter.updated_at, "time"),
            ),
            keyset=("user_id", "day"),
            time_column="day",
            of_user=lambda uid, _email: UsageCounter.user_id == uid,
        ),
        Entity(
            "requests",
            (
                Field("id", RequestLog.id),
                Field("created_at", RequestLog.created_at, "time"),
                Field("request_id", RequestLog.request_id, "text"),  # X-Request-ID: the client's text
                Field("user_id", RequestLog.user_id),
                Field("key_id", RequestLog.key_id),
                Field("endpoint", RequestLog.endpoint),
                Field("protocol", RequestLog.protocol),
                Field("model", RequestLog.model, "text"),  # what the client asked for, as it wrote it
                Field("upstream", RequestLog.upstream),
                Field("stream", RequestLog.stream, "bool"),
                Field("status_code", RequestLog.status_code),
                Field("error_code", RequestLog.error_code),
                Field("prompt_tokens", RequestLog.prompt_tokens),
                Field("completion_tokens", RequestLog.completion_tokens),
                Field("usage_reported", RequestLog.usage_reported, "bool"),
                Field("latency_ms", RequestLog.latency_ms),
                Field("ttft_ms", RequestLog.ttft_ms),
                # In PRICE_CURRENCY at the price of its time; empty (null) when its model had no price (cost 0).
                Field("cost", RequestLog.cost_nanos, "nanos"),
            ),
            keyset=("id",),
            time_column="created_at",
            of_user=lambda uid, _email: RequestLog.user_id == uid,
        ),
        Entity(
            "audit",
            (
                Field("id", AuditEvent.id),
                Field("created_at", AuditEvent.created_at, "time"),
                Field("actor_type", AuditEvent.actor_type),
                Field("actor_id", AuditEvent.actor_id),
                Field("actor_key_id", AuditEvent.actor_key_id),
                Field("actor_label", AuditEvent.actor_label, "text"),
                Field("client_ip", AuditEvent.client_ip, "ip"),
                Field("action", AuditEvent.action),
                Field("target_type", AuditEvent.target_type),
                Field("target_id", AuditEvent.target_id),
                Field("details", AuditEvent.details, "json"),
                Field("request_id", AuditEvent.request_id, "text"),
                # With every other field known, a row's hash would let anyone test guesses of its masked parts.
                Field("prev_hash", AuditEvent.prev_hash, raw_only=True),
                Field("hash", AuditEvent.hash, raw_only=True),
            ),
            keyset=("id",),
            time_column="created_at",
            of_user=audit_of_user,
        ),
        Entity(
            "invites",
            (
                Field("id", Invite.id),
                Field("email", Invite.email, "email"),
                Field("role", Invite.role),
                Field("created_by", Invite.created_by),
                Field("created_at", Invite.created_at, "time"),
                Field("expires_at", Invite.expires_at, "time"),
                Field("max_uses", Invite.max_uses),
                Field("uses", Invite.uses),
                Field("revoked_at", Invite.revoked_at, "time"),
                Field("last_used_at", Invite.last_used_at, "time"),
            ),
            keyset=("id",),
            time_column="created_at",
            of_user=lambda uid, email: or_(Invite.created_by == uid, Invite.email == email),
        ),
        Entity(
            "keys",
            (
                Field("id", ApiKey.id),
                Field("user_id", ApiKey.user_id),
                Field("name", ApiKey.name, "text"),
                Field("prefix", ApiKey.prefix),
                Field("created_at", ApiKey.created_at, "time"),
                Field("last_used_at", ApiKey.last_used_at, "time"),
                Field("expires_at", ApiKey.expires_at, "time"),
                Field("revoked_at", ApiKey.revoked_at, "time"),
            ),
            keyset=("id",),
            time_column=None,  # the current state, like users
            of_user=lambda uid, _email: ApiKey.user_id == uid,
        ),
        Entity(
            "responses",
            (
                Field("id", StoredResponse.id),
                Field("created_at", StoredResponse.created_at, "time"),
                Field("user_id", StoredResponse.user_id),
                Field("key_id", StoredResponse.key_id),
                Field("model", StoredResponse.model, "text"),  # what the client asked for, as it wrote it
                Field("previous_response_id", StoredResponse.previous_response_id),
                Field("input_items", StoredResponse.input_items, "json", raw_only=True),  # message contents
                Field("response", StoredResponse.response, "json", raw_only=True),  # message contents
            ),
            keyset=("created_at", "id"),
            time_column="created_at",
            of_user=lambda uid, _email: StoredResponse.user_id == uid,
            batch_rows=200,  # a raw export's rows hold whole conversations, tens of KB each
        ),
    )
}
