"""Background tasks of the app's lifespan."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any


async def stop(task: asyncio.Task[Any] | None) -> None:
    """Cancel a background task and wait until it has ended (no-op for None)."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def logged(step: Callable[[], Awaitable[object]], *, log: Any, event: str) -> None:
    """Run one round of background work; a failure is one warning line (`event`), and the next round retries."""
    try:
        await step()
    except Exception as exc:
        log.warning(event, error=f"{type(exc).__name__}: {str(exc)[:200]}")


async def every(seconds: float, step: Callable[[], Awaitable[object]], *, log: Any, event: str) -> None:
    """Run `step` every `seconds` (after sleeping first) until cancelled; failures as in `logged`."""
    while True:
        await asyncio.sleep(seconds)
        await logged(step, log=log, event=event)
