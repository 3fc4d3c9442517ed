"""Redis: reachable when REDIS_URL is set, and required when several replicas share the database."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gatehouse.cli.doctor_checks.report import Check, failed, passed, skipped, warned
from gatehouse.settings import Settings

FIX_URL = "check REDIS_URL and that Redis runs and accepts this host"


@dataclass
class RedisFacts:
    """The Redis check, and Redis's clock minus this machine's (seconds) when it answered."""

    check: Check
    clock_offset: float | None = None  # None: Redis did not answer (or is not set)


def describe_redis(url: str) -> str:
    """Redis's host and port, never its password."""
    parts = urlsplit(url)
    return f"Redis {parts.hostname}:{parts.port or 6379}"


async def probe_redis(settings: Settings, live_replicas: int | None, wait: float) -> RedisFacts:
    """PING and TIME with a short timeout; FAIL when several replicas are alive without REDIS_URL."""
    several = live_replicas is not None and live_replicas > 1
    if not settings.redis_url:
        if several:
            return RedisFacts(
                failed(
                    "redis",
                    f"{live_replicas} replicas are alive without REDIS_URL: key revocations, rate limits and stream "
                    "terminations do not reach the other replicas",
                    "set REDIS_URL on every replica (or run one replica with one worker)",
                )
            )
        if settings.is_prod:
            return RedisFacts(
                warned(
                    "redis",
                    "REDIS_URL is not set: fine for one replica with one worker, not for more",
                    "set REDIS_URL before adding replicas or `--workers`",
                )
            )
        return RedisFacts(skipped("redis", "REDIS_URL is not set (one replica)"))
    import redis.asyncio as redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=wait, socket_timeout=wait)
    where = describe_redis(settings.redis_url)
    started = time.perf_counter()
    try:
        before = time.time()
        seconds, micros = await asyncio.wait_for(client.time(), wait)
        after = time.time()
        await asyncio.wait_for(client.ping(), wait)
    except Exception as exc:  # refused, timed out, bad password: the finding itself
        took = time.perf_counter() - started
        reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        summary = f"{where} is unreachable ({reason})"
        if several:
            summary += f", with {live_replicas} replicas alive: they no longer share revocations and rate limits"
        return RedisFacts(failed("redis", summary, FIX_URL, took))
    finally:
        await client.aclose()
    offset = seconds + micros / 1e6 - (before + after) / 2
    replicas = f", {live_replicas} live replica(s)" if live_replicas is not None else ""
    return RedisFacts(passed("redis", f"{where} answers{replicas}", time.perf_counter() - started), offset)
