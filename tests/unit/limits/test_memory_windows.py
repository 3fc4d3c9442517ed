"""The in-process moving window (limits/ratelimit.py MemoryWindows): exact at its edges, cheap per hit."""

from __future__ import annotations

import time

import pytest

from gatehouse.limits.ratelimit import Item, MemoryWindows, ShareWindows


async def test_admits_exactly_the_limit_then_frees_one_slot_per_expired_hit(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    windows, item = MemoryWindows(), Item("rule", 3, 60)
    admitted = []
    for _ in range(4):
        admitted.append(await windows.hit(item, "u1"))
        now[0] += 1  # hits at 1000, 1001, 1002 (the fourth, at 1003, refused)
    assert admitted == [True, True, True, False]
    now[0] = 1_000.0
    assert await windows.hit(item, "u2")  # identities are separate
    stats = await windows.get_window_stats(item, "u1")
    assert (stats.remaining, stats.reset_time) == (0, 1_060.0)
    now[0] = 1_059.999
    assert not await windows.test(item, "u1")
    now[0] = 1_060.0  # the first hit leaves the window: exactly one slot again
    assert await windows.test(item, "u1")
    assert await windows.hit(item, "u1")
    assert not await windows.hit(item, "u1")


async def test_a_changed_limit_counts_afresh_and_idle_windows_are_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    monkeypatch.setattr(time, "time", lambda: now[0])
    windows = MemoryWindows()
    assert await windows.hit(Item("rule", 1, 60), "u1")
    assert await windows.hit(Item("rule", 2, 60), "u1")  # as the Redis backend keys it
    now[0] = 61.0
    windows.sweep()
    assert windows._windows == {}


async def test_a_hit_costs_the_same_however_full_the_window() -> None:
    windows, item = MemoryWindows(), Item("rule", 10**9, 60)
    for _ in range(100_000):  # the `limits` memory storage copied its whole list on every hit
        await windows.hit(item, "u1")
    stats = await windows.get_window_stats(item, "u1")
    assert stats.remaining == 10**9 - 100_000


async def test_a_replicas_share_keeps_counting_when_the_share_changes() -> None:
    windows = ShareWindows()
    share_of_three, share_of_two = Item("chat:30", 10, 60), Item("chat:30", 15, 60)
    assert [await windows.hit(share_of_three, "u1") for _ in range(11)] == [True] * 10 + [False]
    # A replica left: the share grows, and what was admitted already still counts.
    assert [await windows.hit(share_of_two, "u1") for _ in range(6)] == [True] * 5 + [False]
    assert await windows.hit(Item("chat:60", 20, 60), "u1")  # another limit is another window
