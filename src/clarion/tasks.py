"""Fire-and-forget tasks that are kept referenced until done (asyncio holds them weakly)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

log = logging.getLogger("clarion.tasks")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    task = asyncio.ensure_future(coro)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


async def every(seconds: float, job: Callable[[], Awaitable[Any]], what: str) -> None:
    """Run `job` every `seconds` until cancelled; a failure is logged and retried next time
    (background work every node runs: digests, retention, releases, presence)."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception("%s failed; retrying later", what)


async def drain_loop(
    wake: asyncio.Event, interval: float, step: Callable[[], Awaitable[bool]], what: str
) -> None:
    """An outbox sender's loop: `step` (one batch; True: more is due at once) again while
    busy, else after `interval` or as soon as `wake` is set. A failure is logged and the
    loop goes on."""
    while True:
        wake.clear()
        try:
            busy = await step()
        except Exception:
            log.exception("%s failed; retrying later", what)
            busy = False
        if busy:
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
