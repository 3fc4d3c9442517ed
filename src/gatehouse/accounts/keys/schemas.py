"""Request and response models for API keys, and their settings: a group, acts_for_users, and the key's own
restrictions (model patterns, client surfaces, client networks, requests per minute)."""

from __future__ import annotations

import ipaddress
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from gatehouse.fields import MAX_DB_INT, Text

# The client surfaces (gateway/surfaces: each adapter's `name`, and embeddings on /v1 and /api).
Surface = Literal["chat", "responses", "messages", "completions", "ollama_chat", "generate", "embeddings"]
SURFACES: tuple[str, ...] = get_args(Surface)
MAX_PATTERNS = 100
MAX_PATTERN = 200
MAX_NETWORKS = 100
# Every setting, as the columns of ApiKey are named; a user may set all but acts_for_users on their own keys.
SETTINGS = ("group_id", "acts_for_users", "allowed_models", "allowed_surfaces", "allowed_networks", "rate_per_minute")


def _patterns(values: list[str]) -> list[str]:
    cleaned: list[str] = []
    for value in values:
        pattern = value.strip()
        if not pattern:
            raise ValueError("a model pattern must not be empty")
        if len(pattern) > MAX_PATTERN:
            raise ValueError(f"a model pattern has at most {MAX_PATTERN} characters")
        if any(unicodedata.category(c) == "Cc" for c in pattern):
            raise ValueError(f"model pattern {pattern!r} contains a control character")
        if pattern not in cleaned:
            cleaned.append(pattern)
    return cleaned


def _surfaces(values: list[Surface]) -> list[Surface]:
    return [s for s in get_args(Surface) if s in values]  # in one order, once each


def normalise_network(value: str) -> str:
    """A CIDR network or a plain address (IPv4 or IPv6) as its normal form (`10.0.0.0/8`, `2001:db8::/32`; an
    address becomes a /32 or /128), or ValueError saying what is wrong."""
    text = value.strip()
    try:
        return str(ipaddress.ip_network(text))
    except ValueError as exc:
        try:
            loose = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError(
                f"{text!r} is not an IPv4 or IPv6 address or network in CIDR notation (e.g. 10.0.0.0/8, "
                "192.168.1.7, 2001:db8::/32)"
            ) from exc
        raise ValueError(f"{text!r} has bits set after its prefix length: did you mean {loose}?") from exc


def _networks(values: list[str]) -> list[str]:
    cleaned: list[str] = []
    for value in values:
        network = normalise_network(value)
        if network not in cleaned:
            cleaned.append(network)
    return cleaned


ModelPatterns = Annotated[
    list[Text],
    Field(
        min_length=1,
        max_length=MAX_PATTERNS,
        description="Model names this key may use, with `*` for any characters (e.g. `llama3*`); null: no list.",
    ),
    AfterValidator(_patterns),
]
Surfaces = Annotated[
    list[Surface],
    Field(min_length=1, description=f"The client surfaces this key may use ({', '.join(SURFACES)}); null: all."),
    AfterValidator(_surfaces),
]
Networks = Annotated[
    list[Text],
    Field(
        min_length=1,
        max_length=MAX_NETWORKS,
        description="Client networks this key may be used from: CIDRs or addresses, IPv4 or IPv6; null: anywhere.",
    ),
    AfterValidator(_networks),
]
RatePerMinute = Annotated[
    int, Field(ge=1, le=MAX_DB_INT, description="This key's own limit of requests per minute; null: none of its own.")
]
GroupId = Annotated[
    int,
    Field(ge=1, le=MAX_DB_INT, description="Bind the key to this group (its owner must belong to it); null: unbound."),
]


class KeyRestrictions(BaseModel):
    """What a user may set on their own keys."""

    group_id: GroupId | None = None
    allowed_models: ModelPatterns | None = None
    allowed_surfaces: Surfaces | None = None
    allowed_networks: Networks | None = None
    rate_per_minute: RatePerMinute | None = None

    def settings(self) -> dict[str, Any]:
        """The settings sent (for an update: null clears one), as ApiKey's columns have them."""
        return self.model_dump(include=self.model_fields_set & set(SETTINGS))


class KeyCreate(KeyRestrictions):
    name: Text = Field(min_length=1, max_length=100)
    expires_at: AwareDatetime | None = Field(default=None, description="Optional expiry, ISO 8601 with a timezone.")
    acts_for_users: bool = Field(
        default=False,
        description="A front-end's key, whose requests name the person they are for (administrators only).",
    )


class KeySettingsUpdate(KeyRestrictions):
    """Only the settings sent change; `null` lifts a restriction or unbinds the group."""

    model_config = ConfigDict(extra="forbid")

    acts_for_users: bool | None = Field(
        default=None,
        description="A front-end's key, whose requests name the person they are for (administrators only).",
    )

    @model_validator(mode="after")
    def _no_null_flag(self) -> KeySettingsUpdate:
        if "acts_for_users" in self.model_fields_set and self.acts_for_users is None:
            raise ValueError("acts_for_users cannot be null: send true or false, or omit it")
        return self


class KeyRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    group_id: int | None = Field(default=None, description="The group the key is bound to; null: none.")
    acts_for_users: bool = False
    allowed_models: list[str] | None = Field(default=None, description="null: any model the owner may use.")
    allowed_surfaces: list[str] | None = Field(default=None, description="null: every surface.")
    allowed_networks: list[str] | None = Field(default=None, description="null: from anywhere.")
    rate_per_minute: int | None = Field(default=None, description="null: no limit of its own.")


class KeyCreated(KeyRead):
    key: str = Field(description="The API key itself: shown once, store it now.")


class KeyPage(BaseModel):
    items: list[KeyRead] = Field(description="Keys, newest first (never the keys themselves: only prefixes).")
    next_cursor: int | None = Field(description="Pass as `before` for the next page; null on the last page.")
