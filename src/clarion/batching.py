"""Group commit: callers that arrive while a write is in flight share the next one.

SQLite commits one transaction at a time, each with an fsync; under load, a batch of N items
in one transaction costs about what one item costs. With no load a batch is a single item and
nothing waits longer than one write.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from clarion.tasks import spawn

T = TypeVar("T")


class Batcher(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], max_items: int = 1000) -> None:
        self._flush = flush
        self._max = max_items
        self._items: list[tuple[T, asyncio.Future[None]]] = []
        self._running = False

    async def submit(self, item: T) -> None:
        """Returns once the batch holding `item` is written; raises what the write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().call_soon(self._start)
        await future

    def _start(self) -> None:
        spawn(self._drain())

    async def _drain(self) -> None:
        try:
            while self._items:
                batch, self._items = self._items[: self._max], self._items[self._max :]
                try:
                    await self._flush([item for item, _ in batch])
                except Exception as exc:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_exception(exc)
                else:
                    for _, fut in batch:
                        if not fut.done():
                            fut.set_result(None)
        finally:
            self._running = False
