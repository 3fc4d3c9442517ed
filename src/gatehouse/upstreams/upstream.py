"""One upstream as this replica sees it (its configuration, adapter, health and requests in flight), the routes
to it, and how a stored row becomes one."""

from __future__ import annotations

from dataclasses import dataclass, field

from gatehouse.upstreams.config import UpstreamConfig, UpstreamKind
from gatehouse.upstreams.health import Health, Override, OverrideState
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.providers import DEMO_EMBED_MODEL, DEMO_MODEL, Provider


@dataclass(eq=False)
class Upstream:
    """One upstream on this replica: its configuration, adapter, health and requests in flight."""

    config: UpstreamConfig
    provider: Provider
    health: Health
    id: int | None = None  # the database row; None for the built-in demo
    source: str = "config"  # api | config | builtin
    discovered: list[str] = field(default_factory=list)
    inflight: int = 0
    retired: bool = False  # replaced or deleted: closed once its last request ends

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def models(self) -> list[str]:
        """The upstream-side model names it serves (configured, else discovered)."""
        if self.config.models:
            return list(self.config.models)
        if self.config.kind is UpstreamKind.DEMO:
            return [DEMO_MODEL, DEMO_EMBED_MODEL]
        return self.discovered


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: this upstream, under this upstream-side model name."""

    upstream: Upstream
    model: str
    max_output: int | None = None  # from the configuration (a model alias's max_output_tokens)

    @property
    def provider(self) -> Provider:
        return self.upstream.provider

    def completion_limit(self, requested: int | None, default: int) -> int:
        """The completion tokens a request may produce here: what the client asked for, else the model's output
        cap (configured, else from its upstream's model list), else `default`; never more than that cap or the
        model's context length."""
        output, context = self.upstream.provider.model_limits.get(self.model, (None, None))
        cap = self.max_output or output
        want = requested if requested is not None else cap or default
        for bound in (cap, context):
            if bound:
                want = min(want, bound)
        return want


@dataclass
class ModelInfo:
    """A model name clients can use, for /v1/models and /api/tags."""

    name: str
    owned_by: str
    upstreams: list[str] = field(default_factory=list)
    created: int = 0


def config_from_row(row: UpstreamRow) -> UpstreamConfig:
    """The adapter configuration of a stored upstream."""
    return UpstreamConfig(
        name=row.name,
        kind=UpstreamKind(row.kind),
        base_url=row.base_url,
        api_key=row.api_key,
        api_key_env=row.api_key_env,
        models=list(row.models or []),
        discover=row.discover,
        headers=dict(row.headers or {}),
        connect_timeout=row.connect_timeout,
        read_timeout=row.read_timeout,
        max_connections=row.max_connections,
    )


def override_from_row(row: UpstreamRow) -> Override | None:
    """The operator override stored with an upstream, if any."""
    if not row.override_state:
        return None
    return Override(
        state=OverrideState(row.override_state),
        reason=row.override_reason or "",
        by=row.override_by,
        at=row.override_at,
    )
