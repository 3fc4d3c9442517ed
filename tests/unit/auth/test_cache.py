"""The auth cache: least recently used out, unknown keys in a map of their own, one read per cold key."""

from __future__ import annotations

import asyncio

import pytest

from gatehouse.auth.cache import OUTAGE_TTL_SECONDS, AuthCache
from gatehouse.auth.principal import Principal
from gatehouse.auth.roles import Role, UserStatus
from gatehouse.core.bus import Signal


def principal(key_id: int, user_id: int = 1) -> Principal:
    return Principal(
        user_id=user_id, email=f"u{user_id}@example.com", role=Role.USER, status=UserStatus.ACTIVE, key_id=key_id
    )


def remember(cache: AuthCache, key_hash: str, value: Principal | None) -> None:
    cache.put(key_hash, value, generation=cache.generation)


def test_a_hit_is_kept_over_older_unused_entries() -> None:
    cache = AuthCache(ttl_seconds=60, max_entries=2)
    remember(cache, "a", principal(1))
    remember(cache, "b", principal(2))
    assert cache.get("a") == (True, principal(1))  # a is now the most recently used
    remember(cache, "c", principal(3))
    assert cache.get("a")[0], "a hit entry was evicted: eviction is not least-recently-used"
    assert cache.get("b") == (False, None)
    assert cache.get("c") == (True, principal(3))


def test_unknown_keys_never_push_out_real_ones() -> None:
    cache = AuthCache(ttl_seconds=60, max_entries=2, max_negative_entries=3)
    remember(cache, "real-1", principal(1))
    remember(cache, "real-2", principal(2))
    for n in range(100):  # a flood of random keys
        remember(cache, f"random-{n}", None)
    assert cache.get("real-1") == (True, principal(1))
    assert cache.get("real-2") == (True, principal(2))
    # The negative map is bounded on its own: the oldest unknown keys went, the newest are remembered.
    assert cache.get("random-0") == (False, None)
    assert cache.get("random-99") == (True, None)
    assert len(cache) == 2 + 3


def test_negative_entries_expire_sooner_and_clear_on_reconnect() -> None:
    cache = AuthCache(ttl_seconds=60, negative_ttl_seconds=0)
    remember(cache, "gone", None)
    assert cache.get("gone") == (False, None)  # expired at once
    cache = AuthCache(ttl_seconds=60)
    remember(cache, "gone", None)
    remember(cache, "real", principal(1))
    cache.on_event(Signal.RECONNECTED, {})
    assert cache.get("gone") == (False, None)
    assert cache.get("real") == (False, None)


def test_a_found_key_replaces_its_negative_entry() -> None:
    cache = AuthCache(ttl_seconds=60)
    remember(cache, "k", None)
    remember(cache, "k", principal(7))
    assert cache.get("k") == (True, principal(7))
    cache.on_event(Signal.KEY_CHANGED, {"key_id": 7})
    assert cache.get("k") == (False, None)


def test_a_key_change_forgets_every_person_cached_under_that_key() -> None:
    # A front-end's key (accounts/acting) caches each person it acts for under the key: all go with the key.
    cache = AuthCache(ttl_seconds=60)
    for person in (1, 2, 3):
        remember(cache, f"7:{person}", principal(7, user_id=person))
    remember(cache, "8:1", principal(8, user_id=1))
    cache.on_event(Signal.USER_CHANGED, {"user_id": 2})
    assert [cache.get(f"7:{p}")[0] for p in (1, 2, 3)] == [True, False, True]
    cache.on_event(Signal.KEY_CHANGED, {"key_id": 7})
    assert [cache.get(f"7:{p}")[0] for p in (1, 2, 3)] == [False, False, False]
    assert cache.get("8:1") == (True, principal(8, user_id=1))


async def test_concurrent_cold_lookups_share_one_read() -> None:
    cache = AuthCache(ttl_seconds=60)
    calls = 0
    release = asyncio.Event()

    async def load() -> Principal | None:
        nonlocal calls
        calls += 1
        await release.wait()
        return principal(1)

    lookups = [asyncio.create_task(cache.lookup("k", load)) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*lookups) == [principal(1)] * 20
    assert calls == 1
    assert await cache.lookup("k", load) == principal(1)  # now cached
    assert calls == 1


async def test_unknown_keys_are_single_flight_too() -> None:
    cache = AuthCache(ttl_seconds=60)
    calls = 0

    async def load() -> Principal | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return None

    assert await asyncio.gather(*(cache.lookup("nope", load) for _ in range(10))) == [None] * 10
    assert calls == 1


async def test_a_lookup_started_before_a_revocation_is_not_joined_after_it() -> None:
    cache = AuthCache(ttl_seconds=60)
    results = [principal(1), None]  # the first read predates the revocation; the second sees it
    release = asyncio.Event()

    async def load() -> Principal | None:
        value = results.pop(0)
        await release.wait()
        return value

    before = asyncio.create_task(cache.lookup("k", load))
    await asyncio.sleep(0)
    cache.on_event(Signal.USER_CHANGED, {"user_id": 1})  # e.g. the user was disabled meanwhile
    after = asyncio.create_task(cache.lookup("k", load))
    await asyncio.sleep(0)
    release.set()
    assert await before == principal(1)
    assert await after is None, "a caller arriving after the revocation got the stale answer"
    assert results == []
    assert cache.get("k") == (True, None)  # only the fresh answer was cached


async def test_a_failed_read_is_shared_and_not_cached() -> None:
    cache = AuthCache(ttl_seconds=60)
    calls = 0

    async def load() -> Principal | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        raise ConnectionError("database down")

    outcomes = await asyncio.gather(*(cache.lookup("k", load) for _ in range(5)), return_exceptions=True)
    assert all(isinstance(o, ConnectionError) for o in outcomes)
    assert calls == 1
    assert cache.get("k") == (False, None)
    with pytest.raises(ConnectionError):
        await cache.lookup("k", load)
    assert calls == 2


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_read() -> None:
    cache = AuthCache(ttl_seconds=60)
    release = asyncio.Event()

    async def load() -> Principal | None:
        await release.wait()
        return principal(1)

    impatient = asyncio.create_task(cache.lookup("k", load))
    patient = asyncio.create_task(cache.lookup("k", load))
    await asyncio.sleep(0)
    impatient.cancel()
    release.set()
    assert await patient == principal(1)
    assert impatient.cancelled()


def test_while_redis_is_down_entries_live_seconds_and_then_as_long_as_before(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("gatehouse.auth.cache.time.monotonic", lambda: now[0])
    cache = AuthCache(ttl_seconds=300)
    remember(cache, "cached-before", principal(1))
    remember(cache, "unknown", None)
    cache.on_redis(False)  # the signals that would empty the cache cannot arrive now
    remember(cache, "cached-during", principal(2))
    now[0] += OUTAGE_TTL_SECONDS - 0.1
    assert cache.get("cached-before")[0] and cache.get("cached-during")[0] and cache.get("unknown")[0]
    now[0] += 0.2
    assert cache.get("cached-before") == cache.get("cached-during") == cache.get("unknown") == (False, None)
    cache.on_redis(True)
    remember(cache, "cached-after", principal(3))
    now[0] += 299
    assert cache.get("cached-after") == (True, principal(3))
