"""Each upstream reachable, with a working key (one cheap authenticated call per kind: its model list), timed;
and what the gateway then serves: at least one chat model and one embeddings model."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

import aiohttp
import orjson

from gatehouse.cli.doctor_checks.report import Check, failed, passed, warned
from gatehouse.gateway.catalog import EMBEDDING_HINTS
from gatehouse.settings import Settings
from gatehouse.upstreams.config import ConfigError, UpstreamConfig, UpstreamKind, demo_wanted, load_config
from gatehouse.upstreams.providers import DEMO_EMBED_MODEL, DEMO_MODEL, MODELS_PATH, HttpProvider


@dataclass
class UpstreamFacts:
    """The upstream checks, the models served, and the upstreams' clocks (Date headers) for the clock check."""

    checks: list[Check] = field(default_factory=list)
    served: set[str] = field(default_factory=set)
    dates: list[tuple[str, float, float]] = field(default_factory=list)  # (upstream, Date header, our time then)


def configured_upstreams(
    settings: Settings, stored: list[UpstreamConfig]
) -> tuple[list[UpstreamConfig], dict[str, list[str]]]:
    """The upstreams the gateway serves (GATEHOUSE_CONFIG and the env shortcuts, with their keys, over the stored
    ones), and the config's model aliases by upstream."""
    config = load_config(settings)
    merged = {upstream.name: upstream for upstream in stored}
    merged.update({upstream.name: upstream for upstream in config.upstreams})
    aliases: dict[str, list[str]] = {}
    for alias, targets in config.models.items():
        for target in targets if isinstance(targets, list) else [targets]:
            aliases.setdefault(target.upstream, []).append(alias)
    return [u for u in merged.values() if u.kind is not UpstreamKind.DEMO], aliases


async def probe_upstreams(settings: Settings, stored: list[UpstreamConfig], wait: float) -> UpstreamFacts:
    """List each upstream's models at once (concurrently), then judge the models served."""
    facts = UpstreamFacts()
    try:
        upstreams, aliases = configured_upstreams(settings, stored)
    except ConfigError as exc:
        facts.checks.append(failed("upstreams", str(exc), "fix GATEHOUSE_CONFIG (the field named)"))
        return facts
    results = await asyncio.gather(*(_probe(upstream, settings, wait) for upstream in upstreams))
    for upstream, (check, names, date) in zip(upstreams, results, strict=True):
        facts.checks.append(check)
        if date is not None:
            facts.dates.append((upstream.name, *date))
        if names is not None:
            facts.served.update(upstream.models or names)
            facts.served.update(aliases.get(upstream.name, []))
    if demo_wanted(settings, len(upstreams)):
        facts.served.update({DEMO_MODEL, DEMO_EMBED_MODEL})
    facts.checks.append(_models(settings, facts.served, demo_only=not upstreams))
    return facts


async def _probe(
    upstream: UpstreamConfig, settings: Settings, wait: float
) -> tuple[Check, list[str] | None, tuple[float, float] | None]:
    """(the check, the models it lists or None, (its Date header, our time) when it sent one)."""
    name = f"upstream.{upstream.name}"
    provider = HttpProvider(upstream, connect_timeout=wait, read_timeout=wait)
    await provider.start()
    started = time.perf_counter()
    date: tuple[float, float] | None = None
    try:
        path = MODELS_PATH[upstream.kind].lstrip("/")
        async with provider.session.get(path, timeout=aiohttp.ClientTimeout(total=wait)) as response:
            took = time.perf_counter() - started
            if header := response.headers.get("Date"):
                try:
                    date = (parsedate_to_datetime(header).timestamp(), time.time() - took / 2)
                except (TypeError, ValueError):
                    date = None
            if response.status in (401, 403):
                return (
                    failed(
                        name,
                        f"{upstream.base_url} refused the key ({response.status})",
                        f"rotate the key: set a working one for upstream {upstream.name} ({_key_source(upstream)})",
                        took,
                    ),
                    None,
                    date,
                )
            if response.status != 200:
                return (
                    failed(
                        name, f"{upstream.base_url} answered {response.status} to /{path}", _fix_url(upstream), took
                    ),
                    None,
                    date,
                )
            names = _model_names(upstream.kind, await response.read())
    except TimeoutError:
        return failed(name, f"{upstream.base_url} did not answer within {wait:g} s", _fix_url(upstream)), None, None
    except (aiohttp.ClientError, OSError) as exc:
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return failed(name, f"{upstream.base_url} is unreachable ({reason})", _fix_url(upstream)), None, None
    finally:
        await provider.close()
    if names is None:
        return failed(name, f"{upstream.base_url} answered /{path} with no model list", _fix_url(upstream)), None, date
    return (
        passed(name, f"{upstream.kind.value} at {upstream.base_url}: key works, {len(names)} model(s)", took),
        names,
        date,
    )


def _model_names(kind: UpstreamKind, body: bytes) -> list[str] | None:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    entries = data.get("models" if kind is UpstreamKind.OLLAMA else "data")
    if not isinstance(entries, list):
        return None
    key = "name" if kind is UpstreamKind.OLLAMA else "id"
    return [str(entry[key]) for entry in entries if isinstance(entry, dict) and key in entry]


def _key_source(upstream: UpstreamConfig) -> str:
    if upstream.api_key_env:
        return f"the environment variable {upstream.api_key_env}"
    return f"its api_key, in GATEHOUSE_CONFIG, {upstream.kind.value.upper()}_API_KEY or PATCH /admin/upstreams/{{id}}"


def _fix_url(upstream: UpstreamConfig) -> str:
    return f"check upstream {upstream.name}'s base_url ({upstream.base_url}) and that the server runs"


def is_embedding_model(name: str) -> bool:
    """Whether a model name looks like an embeddings model (as the gateway's catalog judges it)."""
    lowered = name.lower()
    return name == DEMO_EMBED_MODEL or any(hint in lowered for hint in EMBEDDING_HINTS)


def _models(settings: Settings, served: set[str], *, demo_only: bool) -> Check:
    if demo_only:
        summary = "no upstream is configured: only the built-in demo models are served"
        fix = "configure an upstream (OLLAMA_BASE_URL, OPENAI_BASE_URL, GATEHOUSE_CONFIG or POST /admin/upstreams)"
        return failed("models", summary, fix) if settings.is_prod else warned("models", summary, fix)
    embeddings = sorted(name for name in served if is_embedding_model(name))
    chat = sorted(name for name in served if not is_embedding_model(name))
    if not chat:
        return failed(
            "models",
            "no chat model is served (no upstream answered with one)",
            "fix the upstreams above, or pull/serve a chat model on one",
        )
    if not embeddings:
        return warned(
            "models",
            f"{len(chat)} chat model(s), no embeddings model: /v1/embeddings has nothing to serve",
            "serve an embeddings model (e.g. `ollama pull nomic-embed-text`) or add one to GATEHOUSE_CONFIG",
        )
    return passed(
        "models", f"{len(chat)} chat model(s) (e.g. {chat[0]}), {len(embeddings)} embeddings (e.g. {embeddings[0]})"
    )
