"""Store code written against `AsyncConnection`, run in one trip inside `Database.transact`.

A publish transaction is a dozen statements. Through the async layer each is handed to
aiosqlite's thread and back four times (store/sqlite_thread.py), and with one publish per
request those hand-offs, not SQLite, were most of the server's CPU (docs/benchmarks.md). The
rooms' publish functions only `await conn.execute(...)` (and `conn.run_sync`), so instead of a
second, synchronous copy of each, `Inline` gives them a synchronous connection behind the same
two awaitables, and `drive` runs the coroutine to its end without an event loop: nothing in it
ever waits for one. The whole transaction then costs one hand-off (SQLite) or one greenlet
(PostgreSQL), and the functions stay one copy that both ways of calling share.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, cast

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

T = TypeVar("T")


class Inline:
    """`AsyncConnection`'s `execute` and `run_sync` over a synchronous connection: each
    awaitable is already done when awaited."""

    def __init__(self, sync: Connection) -> None:
        self.sync = sync

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        return self.sync.execute(statement, parameters)

    async def run_sync(self, fn: Callable[[Connection], T]) -> T:
        return fn(self.sync)


class Suspended(RuntimeError):
    """Inline store code awaited something that is not done: it needs the event loop."""


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never suspends, run on the calling thread."""
    try:
        coro.send(None)
    except StopIteration as done:
        return cast(T, done.value)
    coro.close()
    raise Suspended("inline store code waited on the event loop")


def inline(sync: Connection, fn: Callable[[AsyncConnection], Awaitable[T]]) -> T:
    """`fn(conn)` on a synchronous connection, as if on an async one."""
    return drive(cast(Coroutine[Any, Any, T], fn(cast(AsyncConnection, Inline(sync)))))
