"""The upstreams this replica routes to: their adapters, health and the model name -> routes table.

Upstreams live in the database (provisioned through /admin/upstreams, or seeded from GATEHOUSE_CONFIG and
the env shortcuts); every replica loads them, and reloads when the bus says they changed (and every 30 s as a
safety net). Health is each replica's own: background probes (which also discover models), and a circuit
breaker fed by the outcome of real requests. See `health` for how the effective state is decided.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.bus import Signal
from gatehouse.core.feed import EventFeed
from gatehouse.core.logging import get_logger
from gatehouse.core.metrics import set_upstream_state
from gatehouse.core.tasks import stop as stop_task
from gatehouse.settings import Settings
from gatehouse.upstreams.config import (
    DEMO_UPSTREAM,
    GatewayConfig,
    ModelAlias,
    UpstreamConfig,
    UpstreamKind,
    demo_wanted,
)
from gatehouse.upstreams.health import Health, Override, State
from gatehouse.upstreams.models import UpstreamRow
from gatehouse.upstreams.providers import (
    DEMO_LABEL,
    Provider,
    UpstreamTimedOut,
    UpstreamUnreachable,
    create_provider,
)
from gatehouse.upstreams.upstream import ModelInfo, Route, Upstream, config_from_row, override_from_row

log = get_logger("gatehouse.upstreams")
RELOAD_SECONDS = 30.0  # the safety net for a missed bus event
START_PROBE_SECONDS = 5.0  # start-up waits at most this long for the first probes


@dataclass
class _Wanted:
    config: UpstreamConfig
    id: int | None
    source: str
    override: Override | None


class UpstreamRegistry:
    """Upstream adapters, their health, and the model name -> routes table."""

    def __init__(
        self,
        config: GatewayConfig,
        settings: Settings,
        *,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        feed: EventFeed | None = None,
    ) -> None:
        self.file_config = config
        self.settings = settings
        self.sessionmaker = sessionmaker
        self.feed = feed
        self.upstreams: dict[str, Upstream] = {}
        self._retired: list[Upstream] = []
        self._routes: dict[str, list[Route]] = {}
        self._usable: dict[str, list[Route]] = {}
        self._states: dict[str, State] = {}
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the upstreams, probe them once (without blocking start-up on a slow one), keep probing."""
        await self.reload()
        settings = self.settings
        interval = settings.upstream_probe_seconds or settings.model_refresh_seconds
        if interval > 0 or self.sessionmaker is not None:
            self._task = asyncio.create_task(self._run_forever(interval), name="gatehouse-upstream-probes")

    async def close(self) -> None:
        """Stop probing and close every pool."""
        await stop_task(self._task)
        for task in list(self._pending):
            await stop_task(task)
        for upstream in [*self.upstreams.values(), *self._retired]:
            await upstream.provider.close()

    async def _run_forever(self, interval: float) -> None:
        last_reload = last_probe = time.monotonic()
        step = min(interval, RELOAD_SECONDS) if interval > 0 else RELOAD_SECONDS
        while True:
            await asyncio.sleep(step)
            try:
                # Every `interval`, not every step: an interval longer than RELOAD_SECONDS is not shortened to it.
                if interval > 0 and time.monotonic() - last_probe >= interval - 0.001:
                    last_probe = time.monotonic()
                    await self.probe_all()
                if self.sessionmaker is not None and time.monotonic() - last_reload >= RELOAD_SECONDS:
                    last_reload = time.monotonic()
                    await self.reload()
            except Exception:
                log.exception("upstream_probe_round_failed")

    # --- loading -----------------------------------------------------------------------------------

    async def apply_settings(self, settings: Settings, config: GatewayConfig) -> None:
        """A configuration reload: the env shortcuts' and GATEHOUSE_CONFIG's upstreams as they are now. An upstream
        whose key, URL or models changed gets a new pool for new requests; those in flight finish on the old one."""
        self.settings = settings
        self.file_config = config
        await self.reload()

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: another replica (or this one) changed the stored upstreams, or the bus is back after a Redis
        outage (an override or a change made meanwhile was not heard)."""
        if kind in (Signal.UPSTREAMS_CHANGED, Signal.RECONNECTED):
            await self.reload()

    async def _stored(self) -> list[UpstreamRow]:
        if self.sessionmaker is None:
            return []
        async with self.sessionmaker() as session:
            return list((await session.execute(select(UpstreamRow).order_by(UpstreamRow.id))).scalars())

    def _wanted(self, rows: Iterable[UpstreamRow]) -> dict[str, _Wanted]:
        from_file = {u.name: u for u in self.file_config.upstreams}
        wanted: dict[str, _Wanted] = {}
        for row in rows:
            try:
                # A file- or env-seeded upstream keeps its key where the operator put it, not in the database.
                config = from_file.get(row.name) if row.source == "config" else None
                config = config or config_from_row(row)
            except ValueError as exc:
                log.error("upstream_row_invalid", upstream=row.name, error=str(exc))
                continue
            wanted[row.name] = _Wanted(config, row.id, row.source, override_from_row(row))
        for upstream in self.file_config.upstreams:
            if upstream.name not in wanted:  # not stored (yet): serve it from the file all the same
                wanted[upstream.name] = _Wanted(upstream, None, "config", None)
        others = sum(1 for w in wanted.values() if w.config.kind is not UpstreamKind.DEMO)
        if demo_wanted(self.settings, others) and DEMO_UPSTREAM.name not in wanted:
            wanted[DEMO_UPSTREAM.name] = _Wanted(DEMO_UPSTREAM, None, "builtin", None)
        return wanted

    async def reload(self) -> None:
        """Bring this replica in line with the stored upstreams (new pools only where a connection changed)."""
        rows = await self._stored()
        async with self._lock:
            wanted = self._wanted(rows)
            for name in list(self.upstreams):
                if name not in wanted:
                    self._retire(self.upstreams.pop(name))
                    self._states.pop(name, None)
                    set_upstream_state(name, None)
                    log.info("upstream_removed", upstream=name)
            for name, want in wanted.items():
                current = self.upstreams.get(name)
                if current is not None and current.config == want.config:
                    current.id, current.source = want.id, want.source
                    current.health.override = want.override
                    continue
                upstream = await self._create(want)
                if current is not None:
                    upstream.discovered = current.discovered if current.config.base_url == want.config.base_url else []
                    self._retire(current)
                    log.info("upstream_reconfigured", upstream=name)
                self.upstreams[name] = upstream
            self._rebuild()
            for upstream in self.upstreams.values():
                self._check_state(upstream)
        # A new upstream gets its first probe (and its models) now rather than at the next round; a slow one
        # finishes in the background.
        fresh = [u for u in self.upstreams.values() if u.health.probed is None]
        if fresh:
            probes = [self._background(self.probe(u)) for u in fresh]
            await asyncio.wait(probes, timeout=START_PROBE_SECONDS)

    async def _create(self, want: _Wanted) -> Upstream:
        settings = self.settings
        provider = create_provider(
            want.config,
            connect_timeout=settings.upstream_connect_timeout,
            read_timeout=settings.upstream_read_timeout,
            max_answer_bytes=settings.upstream_max_answer_bytes,
        )
        await provider.start()
        health = Health(
            breaker_threshold=settings.upstream_breaker_failures,
            degraded_ms=settings.upstream_degraded_ms,
            override=want.override,
        )
        return Upstream(
            config=want.config,
            provider=provider,
            health=health,
            id=want.id,
            source=want.source,
            discovered=list(want.config.models),
        )

    def _retire(self, upstream: Upstream) -> None:
        """Out of routing now; its pool closes once the requests still on it end (they are not cut off)."""
        upstream.retired = True
        if upstream.inflight:
            self._retired.append(upstream)
        else:
            self._close_later(upstream)

    def _close_later(self, upstream: Upstream) -> None:
        self._background(upstream.provider.close())

    def _background(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task stopped at close() if still running."""
        task = asyncio.ensure_future(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    # --- routing -----------------------------------------------------------------------------------

    def _rebuild(self) -> None:
        routes: dict[str, list[Route]] = {}
        for upstream in self.upstreams.values():
            for model in upstream.models:
                routes.setdefault(model, []).append(Route(upstream, model))
        for alias, targets in self.file_config.models.items():
            chain = targets if isinstance(targets, list) else [targets]
            routes[alias] = [
                Route(self.upstreams[t.upstream], t.model, t.max_output_tokens)
                for t in chain
                if isinstance(t, ModelAlias) and t.upstream in self.upstreams
            ]
        self._routes = routes
        self._usable = {}

    def routes(self, model: str) -> list[Route]:
        """The usable ways to serve `model`, in failover order: healthy upstreams first, then degraded ones."""
        usable = self._usable.get(model)
        if usable is None:
            candidates = [r for r in self._routes.get(model, ()) if r.upstream.health.usable]
            healthy = [r for r in candidates if r.upstream.health.state is State.UP]
            usable = self._usable[model] = healthy + [r for r in candidates if r.upstream.health.state is not State.UP]
        return usable

    def all_routes(self, model: str) -> list[Route]:
        """Every way to serve `model`, usable or not (to explain why none is)."""
        return self._routes.get(model, [])

    def models(self) -> list[ModelInfo]:
        """Every model name clients can use."""
        now = int(time.time())
        infos = []
        for name, routes in sorted(self._routes.items()):
            if not routes:
                continue
            upstreams = [r.upstream.name for r in routes]
            demo = any(r.upstream.config.kind is UpstreamKind.DEMO for r in routes)
            infos.append(
                ModelInfo(
                    name=name,
                    owned_by=DEMO_LABEL if demo else ",".join(dict.fromkeys(upstreams)),
                    upstreams=upstreams,
                    created=now,
                )
            )
        return infos

    @property
    def providers(self) -> dict[str, Provider]:
        return {name: u.provider for name, u in self.upstreams.items()}

    def is_demo_only(self) -> bool:
        """True when the only upstream is the built-in demo."""
        return all(u.config.kind is UpstreamKind.DEMO for u in self.upstreams.values())

    # --- requests in flight and their outcomes ---------------------------------------------------

    def acquire(self, upstream: Upstream) -> None:
        """A request is now on `upstream` (released by `release` whatever happens)."""
        upstream.inflight += 1

    def release(self, upstream: Upstream) -> None:
        upstream.inflight -= 1
        if upstream.inflight:
            return
        if upstream.retired and upstream in self._retired:
            self._retired.remove(upstream)
            self._close_later(upstream)
        elif upstream.health.state is State.DRAIN and self.feed is not None:
            self.feed.publish("upstream.drained", {"upstream": upstream.name})

    def request_ok(self, upstream: Upstream) -> None:
        health = upstream.health
        if health.failures:
            health.request_ok()
            self._check_state(upstream)

    def request_failed(self, upstream: Upstream, error: str) -> None:
        if upstream.health.request_failed(error):
            log.warning("upstream_breaker_opened", upstream=upstream.name, failures=upstream.health.failures)
        self._check_state(upstream)

    # --- probes ------------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Probe every upstream now (also re-discovers models)."""
        await self.probe_all()

    async def probe_all(self) -> None:
        await asyncio.gather(*(self.probe(u) for u in list(self.upstreams.values())))

    async def probe(self, upstream: Upstream) -> None:
        """Ask the upstream for its models: its health, and (when discovering) what it serves."""
        started = time.perf_counter()
        try:
            listed = await upstream.provider.list_models(within=self.settings.upstream_probe_timeout)
        except (UpstreamUnreachable, UpstreamTimedOut) as exc:
            if upstream.health.last_error != str(exc):
                log.warning("upstream_probe_failed", upstream=upstream.name, error=str(exc))
            upstream.health.probe_failed(str(exc), (time.perf_counter() - started) * 1000)
        except Exception as exc:
            log.exception("upstream_probe_crashed", upstream=upstream.name)
            upstream.health.probe_failed(f"probe crashed: {type(exc).__name__}", (time.perf_counter() - started) * 1000)
        else:
            upstream.health.probe_ok((time.perf_counter() - started) * 1000)
            if upstream.config.discover and not upstream.config.models and listed != upstream.discovered:
                log.info("models_discovered", upstream=upstream.name, count=len(listed))
                upstream.discovered = listed
                if self.upstreams.get(upstream.name) is upstream:
                    self._rebuild()
        if self.upstreams.get(upstream.name) is upstream:
            self._check_state(upstream)

    def _check_state(self, upstream: Upstream) -> None:
        """Announce a change of effective state: log, metric, live feed; routing reconsiders."""
        state = upstream.health.state
        previous = self._states.get(upstream.name)
        if state is previous:
            return
        self._states[upstream.name] = state
        self._usable = {}
        set_upstream_state(upstream.name, state.value)
        if previous is None:
            return
        health = upstream.health
        log.info("upstream_state_changed", upstream=upstream.name, state=state.value, previous=previous.value)
        if self.feed is not None:
            self.feed.publish(
                "upstream.state",
                {
                    "upstream": upstream.name,
                    "state": state.value,
                    "previous": previous.value,
                    "error": health.last_error,
                    "override": health.override.state.value if health.override else None,
                },
            )

    # --- views -------------------------------------------------------------------------------------

    def get(self, name: str) -> Upstream | None:
        return self.upstreams.get(name)

    def describe(self, upstream: Upstream) -> dict[str, Any]:
        """This replica's view of one upstream."""
        return {
            "id": upstream.id,
            "name": upstream.name,
            "kind": upstream.config.kind.value,
            "source": upstream.source,
            "models": upstream.models,
            "inflight": upstream.inflight,
            **upstream.health.public(),
        }

    def status(self) -> list[dict[str, Any]]:
        """Each upstream as operators see it (this replica's view of its health)."""
        return [self.describe(u) for u in self.upstreams.values()]
