"""Group commit: callers that arrive while a write is in flight share the next one.

SQLite commits one transaction at a time, each with an fsync; under load, a batch of N items
in one transaction costs about what one item costs. With no load a batch is a single item and
nothing waits longer than one write. Committed batches also reach the hub together, so their
frames leave in one write per connection.

Under load a batch is cut the moment the write before it ends, while the callers that write
answered are still on their way back: with 16 callers in flight the batches alternated 1, 15,
1, 15 (docs/benchmarks.md). With `gather_turns`, a batch smaller than the last one first
yields that many turns of the event loop, so requests already received reach it; with no
concurrent load (a last batch of one) nothing waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

from clarion.tasks import spawn

T = TypeVar("T")
R = TypeVar("R")


class Batcher(Generic[T, R]):
    def __init__(
        self,
        flush: Callable[[list[T]], Awaitable[Sequence[R]]],
        max_weight: int = 100,
        weight: Callable[[T], int] = lambda _: 1,
        gather_turns: int = 0,
    ) -> None:
        self._flush = flush
        self._max = max_weight
        self._weight = weight
        self._turns = gather_turns
        self._items: list[tuple[T, asyncio.Future[R]]] = []
        self._running = False
        self._last = 0  # the size of the last batch written

    async def submit(self, item: T) -> R:
        """The result for `item` once its batch is written; raises what the write raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._items.append((item, future))
        if not self._running:
            self._running = True
            spawn(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._items:
                if gathering(self._last, len(self._items)):
                    for _ in range(self._turns):
                        await asyncio.sleep(0)
                n, total = 0, 0
                while n < len(self._items) and (n == 0 or total < self._max):
                    total += self._weight(self._items[n][0])
                    n += 1
                batch, self._items = self._items[:n], self._items[n:]
                self._last = n
                await self._write(batch)
        finally:
            self._running = False

    async def _write(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        """Write a batch; when it fails, write its items one by one, so a bad item (one the
        database refuses) fails alone and its neighbours still commit. A failed write
        committed nothing, so writing again is safe."""
        try:
            results = await self._flush([item for item, _ in batch])
        except Exception as exc:
            if len(batch) > 1:
                for one in batch:
                    await self._write([one])
                return
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
        else:
            for (_, fut), result in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(result)


def gathering(last: int, waiting: int) -> bool:
    """Whether a batch should wait a few loop turns for more: under concurrent load (the last
    batch held several) and smaller than the last one (some of its callers are coming back)."""
    return last > 1 and waiting < last
