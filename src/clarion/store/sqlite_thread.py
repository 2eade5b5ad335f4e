"""A whole call's statements in one trip to the thread of an aiosqlite connection.

Through SQLAlchemy's async layer every statement on SQLite is handed to aiosqlite's thread and
back four times (cursor, execute, fetch, close), each hand-off costing more CPU than a small
indexed SELECT. A call that runs several statements (an unread count, an inbox page, a
connection's snapshot, a mark) instead hands one function to that thread, where it runs them
synchronously through SQLAlchemy's plain `sqlite3` dialect on the same `sqlite3` connection, in
the caller's transaction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.pool import SingletonThreadPool

T = TypeVar("T")


class _Lent:
    """The `sqlite3` connection lent to a synchronous engine, which must neither end the
    caller's transaction nor close the connection: the async connection that owns it does.
    It stands for whatever connection its thread lends now (each aiosqlite thread serves one)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_lending.conn, name)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def _lendable(worker: Any) -> bool:
    """aiosqlite's queue to its thread and its `sqlite3` connection are not public API: if a
    release renames them, calls fall back to SQLAlchemy's `run_sync` (slower, as correct)."""
    return callable(getattr(worker, "_execute", None)) and hasattr(worker, "_conn")


def in_transaction(dbapi_conn: Any) -> bool:
    """Whether SQLAlchemy's aiosqlite connection `dbapi_conn` has a transaction open (True when
    that cannot be told). Read from the event loop's thread: `in_transaction` is a flag of the
    `sqlite3` connection (`sqlite3_get_autocommit`), not a statement, and a connection being
    checked in to its pool runs nothing."""
    worker: Any = getattr(dbapi_conn, "_connection", None)
    if not _lendable(worker):
        return True
    return bool(worker._conn.in_transaction)


_lending = threading.local()  # on each aiosqlite thread: the `sqlite3` connection it lends now


def _lent() -> _Lent:
    return _Lent()


# One synchronous engine for every connection, each call lending its own: one dialect and one
# compiled-statement cache per process. An engine per `sqlite3` connection compiled every
# statement once per connection, again for each overflow connection the reader pool opened and
# dropped, and the snapshot's unread probes, large statements, were then compiled all through a
# connect storm (docs/benchmarks.md, Connect storms against history). The pool keeps one
# connection record per thread (SingletonThreadPool), as each aiosqlite thread lends one
# `sqlite3` connection: a new record per call (NullPool, before) ran the dialect's connect
# hooks on every trip, 170 us of CPU against 17 us for the statements of a small transaction.
THREADS = 64  # records kept, one per thread that ever lent: 13 in use (writer, 12 readers)
_SYNC: Engine = create_engine(
    "sqlite://",
    creator=_lent,
    poolclass=SingletonThreadPool,
    pool_size=THREADS,
    pool_reset_on_return=None,
)


@contextlib.contextmanager
def _lending_to(conn: Any) -> Iterator[Connection]:
    """A connection of the shared engine on `conn` (on `conn`'s thread, for one call)."""
    _lending.conn = conn
    try:
        with _SYNC.connect() as sync:
            yield sync
    finally:
        _lending.conn = None


async def run(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
    """`fn(connection)` on `conn`'s own thread, inside its transaction; a connection that has
    none yet (a reader before its first statement) reads in a transaction of its own."""
    worker = worker_of(await conn.get_raw_connection())
    if worker is None:
        return await conn.run_sync(fn)
    return await on(worker, fn)


def worker_of(raw: Any) -> Any | None:
    """The aiosqlite connection behind a pool's raw connection, if `on` can use it."""
    worker = raw.driver_connection
    return worker if _lendable(worker) else None


async def on(worker: Any, fn: Callable[[Connection], T]) -> T:
    """`fn(connection)` on the thread of `worker` (an aiosqlite connection), inside its
    transaction, or in a read transaction of its own when it has none."""
    lite = worker._conn  # its sqlite3 connection

    def call() -> T:
        own = not lite.in_transaction
        if own:
            lite.execute("BEGIN")
        try:
            with _lending_to(lite) as sync:
                return fn(sync)
        finally:
            if own:
                lite.rollback()

    result: T = await worker._execute(call)
    return result


async def transact(conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
    """`fn(connection)` in a write transaction of its own on `conn` (the writer, with no
    transaction yet): `BEGIN IMMEDIATE`, `fn`, `COMMIT` in one trip; rolled back if it raises."""
    raw = await conn.get_raw_connection()
    worker: Any = raw.driver_connection
    if not _lendable(worker):
        async with conn.begin():  # the writer's BEGIN IMMEDIATE (store/db.py)
            return await conn.run_sync(fn)
    lite = worker._conn

    def call() -> T:
        with _lending_to(lite) as sync:
            sync.exec_driver_sql("BEGIN IMMEDIATE")
            try:
                out = fn(sync)
                sync.exec_driver_sql("COMMIT")
            except BaseException:
                with contextlib.suppress(Exception):
                    lite.rollback()
                raise
            return out

    result: T = await worker._execute(call)
    return result
