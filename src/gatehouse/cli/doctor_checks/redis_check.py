"""Redis: reachable when REDIS_URL is set, and required when several replicas share the database (PING at once;
judged once the database has said how many replicas are alive)."""

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


@dataclass
class RedisPing:
    """What PING and TIME found: how long they took, Redis's clock minus ours, or why they failed."""

    seconds: float
    clock_offset: float | None = None
    failure: str | None = None


async def ping_redis(settings: Settings, wait: float) -> RedisPing | None:
    """TIME and PING with a short timeout (None when REDIS_URL is not set); never raises."""
    if not settings.redis_url:
        return None
    import redis.asyncio as redis

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=wait, socket_timeout=wait)
    started = time.perf_counter()
    try:
        before = time.time()
        seconds, micros = await asyncio.wait_for(client.time(), wait)
        after = time.time()
        await asyncio.wait_for(client.ping(), wait)
    except Exception as exc:  # refused, timed out, bad password: the finding itself
        reason = "no answer in time" if isinstance(exc, TimeoutError) else type(exc).__name__
        return RedisPing(time.perf_counter() - started, failure=reason)
    finally:
        await client.aclose()
    return RedisPing(time.perf_counter() - started, seconds + micros / 1e6 - (before + after) / 2)


def judge_redis(settings: Settings, ping: RedisPing | None, live_replicas: int | None) -> RedisFacts:
    """The Redis check: FAIL when it does not answer, or when several replicas are alive without it."""
    several = live_replicas is not None and live_replicas > 1
    if ping is None:
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
    where = describe_redis(settings.redis_url)
    if ping.failure is not None:
        summary = f"{where} is unreachable ({ping.failure})"
        if several:
            summary += f", with {live_replicas} replicas alive: they no longer share revocations and rate limits"
        return RedisFacts(failed("redis", summary, FIX_URL, ping.seconds))
    replicas = f", {live_replicas} live replica(s)" if live_replicas is not None else ""
    return RedisFacts(passed("redis", f"{where} answers{replicas}", ping.seconds), ping.clock_offset)
