"""Model routing: which upstreams serve a model name, kept fresh by periodic discovery."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field

from gatehouse.ops.logging import get_logger
from gatehouse.ops.metrics import set_upstream_state
from gatehouse.ops.tasks import stop as stop_task
from gatehouse.upstreams.config import GatewayConfig, ModelAlias, UpstreamKind
from gatehouse.upstreams.providers import (
    DEMO_EMBED_MODEL,
    DEMO_LABEL,
    DEMO_MODEL,
    Provider,
    UpstreamTimedOut,
    UpstreamUnreachable,
    create_provider,
)

log = get_logger("gatehouse.upstreams")


@dataclass(frozen=True, slots=True)
class Route:
    """One way to serve a model: this upstream, under this upstream-side model name."""

    provider: Provider
    model: str


@dataclass
class ModelInfo:
    """A model name clients can use, for /v1/models and /api/tags."""

    name: str
    owned_by: str
    upstreams: list[str] = field(default_factory=list)
    created: int = 0


class UpstreamRegistry:
    """Upstream adapters and the model name -> routes table."""

    def __init__(
        self, config: GatewayConfig, *, connect_timeout: float, read_timeout: float, refresh_seconds: float
    ) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {
            u.name: create_provider(u, connect_timeout=connect_timeout, read_timeout=read_timeout)
            for u in config.upstreams
        }
        self.refresh_seconds = refresh_seconds
        self._discovered: dict[str, list[str]] = {u.name: list(u.models) for u in config.upstreams}
        self._routes: dict[str, list[Route]] = {}
        self._task: asyncio.Task[None] | None = None
        self.last_errors: dict[str, str] = {}
        self._rebuild()
        for upstream in config.upstreams:
            set_upstream_state(upstream.name, "up")  # until a discovery says otherwise

    async def start(self) -> None:
        """Open pools, discover models once (without blocking start-up on a slow upstream), keep refreshing."""
        for provider in self.providers.values():
            await provider.start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.refresh(), timeout=5)
        if self.refresh_seconds > 0:
            self._task = asyncio.create_task(self._refresh_forever(), name="gatehouse-model-refresh")

    async def close(self) -> None:
        """Stop refreshing and close pools."""
        await stop_task(self._task)
        for provider in self.providers.values():
            await provider.close()

    async def refresh(self) -> None:
        """Ask every discovering upstream for its models."""
        targets = [u for u in self.config.upstreams if u.discover and not u.models]
        results = await asyncio.gather(*(self.providers[u.name].list_models() for u in targets), return_exceptions=True)
        for upstream, result in zip(targets, results, strict=True):
            if isinstance(result, (UpstreamUnreachable, UpstreamTimedOut)):
                if self.last_errors.get(upstream.name) != str(result):
                    log.warning("model_discovery_failed", upstream=upstream.name, error=str(result))
                self.last_errors[upstream.name] = str(result)
                set_upstream_state(upstream.name, "down")
                continue
            if isinstance(result, BaseException):
                log.error("model_discovery_crashed", upstream=upstream.name, error=repr(result))
                continue
            self.last_errors.pop(upstream.name, None)
            set_upstream_state(upstream.name, "up")
            if result != self._discovered.get(upstream.name):
                log.info("models_discovered", upstream=upstream.name, count=len(result))
            self._discovered[upstream.name] = result
        self._rebuild()

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.refresh()
            except Exception:
                log.exception("model_refresh_failed")

    def _rebuild(self) -> None:
        routes: dict[str, list[Route]] = {}
        for upstream in self.config.upstreams:
            provider = self.providers[upstream.name]
            models = upstream.models or self._discovered.get(upstream.name, [])
            if upstream.kind is UpstreamKind.DEMO and not models:
                models = [DEMO_MODEL, DEMO_EMBED_MODEL]
            for model in models:
                routes.setdefault(model, []).append(Route(provider, model))
        for alias, targets in self.config.models.items():
            chain = targets if isinstance(targets, list) else [targets]
            routes[alias] = [Route(self.providers[t.upstream], t.model) for t in chain if isinstance(t, ModelAlias)]
        self._routes = routes

    def routes(self, model: str) -> list[Route]:
        """The ways to serve `model`, in failover order (empty when unknown)."""
        return self._routes.get(model, [])

    def models(self) -> list[ModelInfo]:
        """Every model name clients can use."""
        now = int(time.time())
        infos = []
        for name, routes in sorted(self._routes.items()):
            upstreams = [r.provider.name for r in routes]
            demo = any(r.provider.config.kind is UpstreamKind.DEMO for r in routes)
            infos.append(
                ModelInfo(
                    name=name,
                    owned_by=DEMO_LABEL if demo else ",".join(dict.fromkeys(upstreams)),
                    upstreams=upstreams,
                    created=now,
                )
            )
        return infos

    def is_demo_only(self) -> bool:
        """True when the only upstream is the built-in demo."""
        return all(u.kind is UpstreamKind.DEMO for u in self.config.upstreams)
