"""Request and response models for /admin/upstreams."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, SecretStr, WithJsonSchema
from yarl import URL

from gatehouse.fields import Text
from gatehouse.upstreams.health import OverrideState

# For the document: what the service accepts (it answers 400 invalid_upstream, naming the field, for the rest).
KINDS: list[JsonValue] = ["ollama", "openai", "anthropic"]
BASE_URL_PATTERN = r"^https?://[^\s/?#\u0000-\u001f\u007f-\u009f]+([/?#][^\u0000]*)?$"


def _usable_url(value: str | None) -> str | None:
    """A base_url the upstream's HTTP client can parse (yarl, under aiohttp): a host that cannot be IDNA-encoded,
    say, is refused here (422 naming base_url) instead of failing when the upstream is built."""
    if value is not None:
        try:
            URL(value)
        except (ValueError, UnicodeError) as exc:
            raise ValueError(f"not a usable URL ({exc}): e.g. http://gpu-1:11434 or https://api.openai.com") from None
    return value


BaseUrl = Annotated[Text | None, AfterValidator(_usable_url)]

# An extra header sent upstream must be one HTTP can carry: a token name, a value of visible characters
# (ASCII, with spaces and tabs); anything else failed when the upstream was built (500).
HeaderName = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")]
HeaderValue = Annotated[str, Field(max_length=8000, pattern=r"^[\t\u0020-\u007e]*$")]


class UpstreamFields(BaseModel):
    """What an operator may set; checked again by the service (400 naming the field)."""

    model_config = ConfigDict(extra="forbid")

    kind: str | None = Field(
        None,
        description="`ollama` (Ollama's API), `openai` (any OpenAI-compatible server) or `anthropic` (Anthropic's "
        "Messages API).",
        json_schema_extra={"enum": [*KINDS, None]},
    )
    base_url: BaseUrl = Field(
        None,
        max_length=2000,
        description="e.g. http://gpu-1:11434 or https://api.openai.com",
        json_schema_extra={"pattern": BASE_URL_PATTERN},
    )
    api_key: SecretStr | None = Field(
        None,
        description="Sent as `Authorization: Bearer` (as `x-api-key` to an anthropic upstream); stored, never shown "
        "again.",
    )
    api_key_env: Text | None = Field(None, max_length=200, description="Or: the environment variable holding the key.")
    models: list[Text] | None = Field(None, description="Models it serves; empty: discovered from the upstream.")
    discover: bool | None = None
    headers: dict[HeaderName, HeaderValue] | None = Field(
        None,
        description="Extra request headers (values are never shown); `anthropic-version` here replaces the version "
        "an anthropic upstream is sent.",
    )
    connect_timeout: float | None = Field(None, gt=0, le=600)
    read_timeout: float | None = Field(None, gt=0, le=3600)
    max_connections: int | None = Field(None, ge=1, le=10_000)
    skip_check: bool = Field(False, description="Save without checking that the URL answers.")

    def values(self) -> dict[str, Any]:
        """The fields given, with the key unwrapped."""
        data = self.model_dump(exclude_unset=True, exclude={"skip_check"})
        if isinstance(self.api_key, SecretStr):
            data["api_key"] = self.api_key.get_secret_value()
        return {k: v for k, v in data.items() if v is not None or k in ("connect_timeout", "read_timeout")}


class UpstreamCreate(UpstreamFields):
    name: Text = Field(max_length=100, description="Unique; letters, digits, dots, dashes, underscores.")
    kind: str | None = Field(description="`ollama`, `openai` or `anthropic`.", json_schema_extra={"enum": KINDS})
    # Required and not null in the document: every kind needs one (the service answers 400 invalid_upstream).
    base_url: Annotated[
        BaseUrl,
        WithJsonSchema({"type": "string", "maxLength": 2000, "pattern": BASE_URL_PATTERN}),
    ] = Field(max_length=2000)


class UpstreamUpdate(UpstreamFields):
    name: Text | None = Field(None, max_length=100)


class OverrideRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: OverrideState = Field(description="`up` (keep routing whatever probes say), `down`, or `drain`.")
    reason: Text = Field(min_length=1, max_length=500, description="Why; kept in the audit log.")


class UpstreamRead(BaseModel):
    id: int
    name: str
    kind: str
    base_url: str
    source: str = Field(description="`api` (provisioned here) or `config` (GATEHOUSE_CONFIG / env: edit it there).")
    api_key_set: bool
    api_key_env: str | None
    models: list[str] = Field(description="Configured models; empty: discovered.")
    discover: bool
    headers: list[str] = Field(description="Names of the extra headers sent.")
    connect_timeout: float | None
    read_timeout: float | None
    max_connections: int
    created_at: datetime
    updated_at: datetime
    # This replica's live view.
    state: str = Field(description="Effective: up, degraded, down or drain (override, probes and breaker).")
    probe: str = Field(description="The last probe's verdict: up, degraded, down, or unknown before the first.")
    last_error: str | None
    latency_ms: float | None
    checked_at: datetime | None
    consecutive_failures: int
    breaker_open: bool
    override: dict[str, Any] | None
    inflight: int = Field(description="Requests on it now (on this replica): a drain is complete at 0.")
    served_models: list[str]
    replica: str
