"""The price table in memory: every version of every model's price, on each replica, and the exact cost of a
request at the price of its time.

A version holds a model name or a `*` pattern and, from its `effective_from` on (until the next version of the
same name), a price or nothing (a removal). For a model at a time, the most specific name priced at that time wins:
the exact name over any pattern, then the longest pattern. A removed exact price lets the patterns apply again.

The table is small (a few versions per model), so each replica loads all of it: at start, on the bus's
PRICES_CHANGED (every change publishes it after its commit) and RECONNECTED, and every RELOAD_SECONDS while no
signal can arrive (no Redis, or Redis unreachable: a change made by the CLI or another replica) or SAFETY_SECONDS
otherwise. A request's price is a dictionary lookup and a bisection: no database read.
"""

from __future__ import annotations

import asyncio
import re
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from gatehouse.core.bus import Signal
from gatehouse.core.logging import get_logger
from gatehouse.core.tasks import stop as stop_task
from gatehouse.limits.models import ModelPrice

log = get_logger("gatehouse.prices")
RELOAD_SECONDS = 2.0  # while no bus signal can arrive: how stale a replica's table may be at most
SAFETY_SECONDS = 60.0  # with Redis up: the safety net for a missed signal
MAX_RESOLVED = 4096  # model names whose matching entries are remembered (clients may send any name)
NANOS_PER_MICRO_TOKEN = 1000  # tokens x micros-per-million-tokens = 10^-12 of the currency; a nano is 10^-9


@dataclass(frozen=True, slots=True)
class Price:
    """A price per million tokens, in millionths of the currency."""

    input_micros: int
    output_micros: int
    cached_input_micros: int


@dataclass(frozen=True, slots=True)
class PriceVersion:
    """One stored version of a name's price (`price` None: this version removes it)."""

    id: int
    model: str
    currency: str
    price: Price | None
    effective_from: datetime
    source: str
    created_by: int | None
    created_at: datetime

    @classmethod
    def of(cls, row: ModelPrice) -> PriceVersion:
        price = None
        if row.input_micros is not None and row.output_micros is not None:
            cached = row.cached_input_micros if row.cached_input_micros is not None else row.input_micros
            price = Price(row.input_micros, row.output_micros, cached)
        return cls(
            id=row.id,
            model=row.model,
            currency=row.currency,
            price=price,
            effective_from=row.effective_from,
            source=row.source,
            created_by=row.created_by,
            created_at=row.created_at,
        )


def cost_nanos(price: Price, prompt_tokens: int, cached_tokens: int, completion_tokens: int) -> int:
    """What a request costs in billionths of the currency, rounded up: the prompt's uncached tokens at the input
    price, its cached ones (a part of the prompt) at the cached-input price, the completion at the output price."""
    cached = min(max(cached_tokens, 0), max(prompt_tokens, 0))
    uncached = max(prompt_tokens, 0) - cached
    total = (
        uncached * price.input_micros
        + cached * price.cached_input_micros
        + max(completion_tokens, 0) * price.output_micros
    )
    return -(-total // NANOS_PER_MICRO_TOKEN)


def is_pattern(name: str) -> bool:
    """Whether a price's name is a `*` pattern rather than a model name."""
    return "*" in name


def pattern_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches any characters (none too); everything else only itself."""
    return re.compile("".join(".*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", pattern)))


@dataclass(frozen=True, slots=True)
class _Timeline:
    """One name's versions, oldest first, as parallel tuples for bisection."""

    name: str
    times: tuple[float, ...]  # effective_from, epoch seconds
    versions: tuple[PriceVersion, ...]

    def at(self, when: float) -> PriceVersion | None:
        index = bisect_right(self.times, when) - 1
        return self.versions[index] if index >= 0 else None


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """Everything loaded at once, swapped in whole by a reload."""

    exact: dict[str, _Timeline]
    patterns: tuple[tuple[re.Pattern[str], _Timeline], ...]  # longest first
    versions: tuple[PriceVersion, ...]


def _snapshot(versions: Iterable[PriceVersion]) -> _Snapshot:
    by_name: dict[str, list[PriceVersion]] = {}
    ordered = sorted(versions, key=lambda v: (v.effective_from, v.id))
    for version in ordered:
        by_name.setdefault(version.model, []).append(version)
    timelines = {
        name: _Timeline(name, tuple(v.effective_from.timestamp() for v in found), tuple(found))
        for name, found in by_name.items()
    }
    patterns = sorted((t for t in timelines.values() if is_pattern(t.name)), key=lambda t: (-len(t.name), t.name))
    return _Snapshot(
        exact={name: t for name, t in timelines.items() if not is_pattern(name)},
        patterns=tuple((pattern_regex(t.name), t) for t in patterns),
        versions=tuple(ordered),
    )


class PriceTable:
    """Every price version, in memory; `price_at` and `cost` answer without the database."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession] | None = None,
        *,
        currency: str = "USD",
        signals_reach_us: Callable[[], bool] = lambda: False,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.currency = currency
        # Whether bus signals from other processes arrive now (Redis configured and up): else poll often.
        self._signals_reach_us = signals_reach_us
        self._snapshot = _snapshot(())
        self._resolved: dict[str, tuple[_Timeline, ...]] = {}
        self._task: asyncio.Task[None] | None = None
        self._reloading = asyncio.Lock()
        self.loaded_at: float | None = None

    # --- loading -----------------------------------------------------------------------------------

    def load(self, versions: Iterable[PriceVersion]) -> None:
        """Replace the table (versions in another currency than PRICE_CURRENCY are left out, and said so)."""
        kept, foreign = [], 0
        for version in versions:
            if version.currency == self.currency:
                kept.append(version)
            else:
                foreign += 1
        if foreign:
            log.warning(
                "prices_in_other_currency_ignored",
                versions=foreign,
                currency=self.currency,
                hint="PRICE_CURRENCY changed: set the prices again in the new currency",
            )
        self._snapshot = _snapshot(kept)
        self._resolved = {}
        self.loaded_at = time.time()

    async def reload(self) -> None:
        """Read every version from the database and swap the table in whole."""
        if self.sessionmaker is None:
            return
        async with self._reloading, self.sessionmaker() as session:
            rows = (await session.execute(select(ModelPrice))).scalars().all()
            self.load(PriceVersion.of(row) for row in rows)

    async def start(self) -> None:
        """Load the table, then keep it fresh when no signal can tell of a change."""
        await self.reload()
        if self.sessionmaker is not None:
            self._task = asyncio.create_task(self._reload_forever(), name="gatehouse-prices-reload")

    async def close(self) -> None:
        """Stop reloading."""
        await stop_task(self._task)

    async def _reload_forever(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(RELOAD_SECONDS)
            if self._signals_reach_us() and time.monotonic() - last < SAFETY_SECONDS:
                continue
            last = time.monotonic()
            try:
                await self.reload()
            except Exception as exc:  # the database is away: the table in memory stays in force
                log.warning("prices_reload_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    async def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """Bus handler: a price changed somewhere, or the bus is back after a Redis outage (changes were missed)."""
        if kind in (Signal.PRICES_CHANGED, Signal.RECONNECTED):
            try:
                await self.reload()
            except Exception as exc:
                log.warning("prices_reload_failed", error=f"{type(exc).__name__}: {exc}"[:200])

    # --- reading -----------------------------------------------------------------------------------

    @property
    def versions(self) -> tuple[PriceVersion, ...]:
        """Every version loaded, in order of effect."""
        return self._snapshot.versions

    def names(self) -> list[str]:
        """Every name (model or pattern) that has versions."""
        snapshot = self._snapshot
        return sorted([*snapshot.exact, *(t.name for _, t in snapshot.patterns)])

    def _matching(self, model: str) -> tuple[_Timeline, ...]:
        """The timelines that may price `model`, most specific first (remembered per model name)."""
        found = self._resolved.get(model)
        if found is None:
            snapshot = self._snapshot
            exact = snapshot.exact.get(model)
            found = (*((exact,) if exact else ()), *(t for regex, t in snapshot.patterns if regex.fullmatch(model)))
            if len(self._resolved) >= MAX_RESOLVED:
                self._resolved = {}
            self._resolved[model] = found
        return found

    def price_at(self, model: str, when: datetime | float) -> PriceVersion | None:
        """The version that prices `model` at `when` (a datetime, or epoch seconds): the most specific name with a
        price in force then; None when no name prices it."""
        moment = when.timestamp() if isinstance(when, datetime) else when
        for timeline in self._matching(model):
            version = timeline.at(moment)
            if version is not None and version.price is not None:
                return version
        return None

    def version_of(self, name: str, when: datetime | float) -> PriceVersion | None:
        """The version of exactly this name (model or pattern) in force at `when`, a removal included."""
        moment = when.timestamp() if isinstance(when, datetime) else when
        snapshot = self._snapshot
        timeline = snapshot.exact.get(name) or next((t for _, t in snapshot.patterns if t.name == name), None)
        return timeline.at(moment) if timeline is not None else None

    def next_version_of(self, name: str, after: datetime | float) -> PriceVersion | None:
        """The next change of this name after `after` (a scheduled one): the version in force at the first later
        time a version takes effect (of several at that time, the last made), if any."""
        moment = after.timestamp() if isinstance(after, datetime) else after
        snapshot = self._snapshot
        timeline = snapshot.exact.get(name) or next((t for _, t in snapshot.patterns if t.name == name), None)
        if timeline is None:
            return None
        index = bisect_right(timeline.times, moment)
        return timeline.at(timeline.times[index]) if index < len(timeline.times) else None

    def cost(self, model: str, started: float, prompt: int, cached: int, completion: int) -> int | None:
        """What a request for `model` that started at `started` (epoch seconds) costs, in billionths of the
        currency; None when nothing prices the model then (it costs 0, and reports flag it)."""
        version = self.price_at(model, started)
        if version is None or version.price is None:
            return None
        return cost_nanos(version.price, prompt, cached, completion)
