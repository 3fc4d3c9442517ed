"""Which person a front-end's request names, and how: a header (ACTS_FOR_USERS_HEADER), OpenAI's `user` field (and
the Responses API's `safety_identifier`) or Anthropic's `metadata.user_id`, as ACTS_FOR_USERS_SOURCES allows, the
header first. People are named by the email of their Gatehouse account, never by id: a front-end's `user` field
often carries its own user ids, and one of those that happened to equal a Gatehouse id would name someone else."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatehouse.accounts.acting.errors import InvalidActingUser
from gatehouse.settings import Settings

DEFAULT_HEADER = "X-Gatehouse-User"  # refused from keys that do not act for users, whatever the setting
MAX_EMAIL = 320
# One @, something on each side, no space or control character: what an account's email can be. The account
# itself decides the rest (an unknown email is unknown, however it is spelt).
EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+")
# The body fields that may name the person, by client surface (Ollama's protocol has none: the header only).
USER_FIELDS = {
    "chat": ("user",),
    "completions": ("user",),
    "embeddings": ("user",),
    "responses": ("safety_identifier", "user"),  # OpenAI's current name first, then the deprecated one
}
METADATA_SURFACES = frozenset({"messages", "count_tokens"})


@dataclass(frozen=True, slots=True)
class Named:
    """What a request names, and where (for the messages: "the X-Gatehouse-User header", "`user`")."""

    value: str
    where: str


@dataclass(frozen=True, slots=True)
class Naming:
    """Where requests may name a person, from the settings."""

    headers: tuple[str, ...]  # the header names read, as configured (empty when `header` is not a source)
    refused: tuple[str, ...]  # the header names a key that does not act for users may not send
    user_field: bool
    metadata: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> Naming:
        names = tuple(settings.acts_for_users_header.split(","))
        sources = set(settings.acts_for_users_sources.split(","))
        refused = names if DEFAULT_HEADER.lower() in {n.lower() for n in names} else (*names, DEFAULT_HEADER)
        return cls(
            headers=names if "header" in sources else (),
            refused=refused,
            user_field="user" in sources,
            metadata="metadata" in sources,
        )

    def refused_header(self, headers: Mapping[str, str]) -> str | None:
        """The first header naming a person that this request carries (for a key that does not act for users)."""
        for name in self.refused:
            if name in headers:
                return name
        return None

    def named(self, headers: Mapping[str, str], body: Mapping[str, Any] | None, surface: str | None) -> Named | None:
        """What the request names (None: nobody); `body` None reads the headers only."""
        for name in self.headers:
            value = headers.get(name)
            if value is not None and value.strip():
                return Named(value.strip(), f"the {name} header")
        if body is None or surface is None:
            return None
        if self.user_field:
            for field in USER_FIELDS.get(surface, ()):
                value = body.get(field)
                if isinstance(value, str) and value.strip():
                    return Named(value.strip(), f"`{field}`")
        if self.metadata and surface in METADATA_SURFACES:
            metadata = body.get("metadata")
            value = metadata.get("user_id") if isinstance(metadata, dict) else None
            if isinstance(value, str) and value.strip():
                return Named(value.strip(), "`metadata.user_id`")
        return None

    def ways(self, surface: str | None) -> str:
        """How a request of this surface may name its person, for the message of a request that names nobody."""
        ways = [f"the {self.headers[0]} header"] if self.headers else []
        if self.user_field and surface in USER_FIELDS:
            ways.append(" or ".join(f"`{field}`" for field in USER_FIELDS[surface]))
        if self.metadata and surface in METADATA_SURFACES:
            ways.append("`metadata.user_id`")
        return " or ".join(ways)


def email_of(named: Named) -> str:
    """The email `named` gives, lower-cased (emails are unique whatever their case); 400 when it is not one."""
    email = named.value.lower()
    if len(email) > MAX_EMAIL or not EMAIL.fullmatch(email):
        shown = named.value if len(named.value) <= 80 else named.value[:80] + "..."
        raise InvalidActingUser(
            f"{named.where[0].upper()}{named.where[1:]} must be the email of the person this request is for; got "
            f"{shown!r}. Gatehouse names people by the email of their account (not by id); a front-end that puts its "
            "own user ids there must send the email in the header instead.",
        )
    return email
