"""The database: engines, SQLite setup, and the small API every room of the store uses.

SQLite allows one writer at a time, so writes go through a one-connection engine that opens
`BEGIN IMMEDIATE` (no lock upgrades, no SQLITE_BUSY mid-transaction) while reads use a pool.
On PostgreSQL reads use a pool of their own in autocommit; per-stream row locks on `streams`
order the writers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, event, insert, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState

from clarion.domain import StoreUnavailable
from clarion.store import migrate, raw, sqlite_thread
from clarion.store.inline import Inline

log = logging.getLogger("clarion.store")
T = TypeVar("T")


def async_url(url: str) -> str:
    """Map the URLs users type to SQLAlchemy async driver URLs."""
    for plain, driver in (
        ("sqlite:", "sqlite+aiosqlite:"),
        ("postgresql:", "postgresql+asyncpg:"),
        ("postgres:", "postgresql+asyncpg:"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
        return url
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


SNAPSHOT_TRIES = 8  # a snapshot transaction's attempts (`transact`) before a 503
RETRYABLE = frozenset(("40001", "40P01"))  # serialization failure, deadlock detected
READERS = 8  # SQLite reader connections, all kept open (as many as the pool allowed before)
# SQLite readers held out of the pool for `reading`: a pool checkout and check-in through the
# async engine cost ~120 us of CPU per call (greenlets, the pool's records and events), where
# the trip to the connection's thread and back costs ~35 us; an unread count is 1-2 ms.
HELD = 4
# Every statement of Clarion's is a handful of index probes, shaped so that its generic plan
# (made for `$1`...) uses the intended index (tests/test_store_plans.py). So Clarion's sessions
# plan each prepared statement once: PostgreSQL re-planned a count's probe statement (8 ms to
# plan) on most calls while it judged custom plans cheaper. Once statistics exist, it also
# costs some of them (a count's union of per-window scans) high enough for parallel workers or
# JIT: starting two workers took 12 ms of a 0.1 ms count at 1,000,000 stored
# (docs/architecture.md). Neither pays off here. Only Clarion's sessions are set this way.
PG_CONNECT = {
    "server_settings": {
        "max_parallel_workers_per_gather": "0",
        "jit": "off",
        "plan_cache_mode": "force_generic_plan",
    }
}


class Database:
    """The engines behind `read()` and `write()`; the only way the store's rooms reach SQL."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = async_url(url)
        self.sqlite = self.url.startswith("sqlite")
        self._synchronous = sqlite_synchronous
        self.reader: AsyncEngine
        self.writer: AsyncEngine
        self._held: list[AsyncConnection] = []  # SQLite: readers kept checked out (HELD)
        self._idle: list[Any] = []  # their aiosqlite connections not in use now

    async def connect(self) -> None:
        if self.sqlite:
            # No rollback on return to the pool when no transaction is open (`_sqlite_setup`).
            self.writer = create_async_engine(
                self.url, pool_size=1, max_overflow=0, pool_reset_on_return=None
            )
            # Readers are kept, never opened for a burst and closed after it (overflow): each
            # SQLite connection brings a thread, a schema parse and a synchronous engine with
            # its compiled-statement cache (store/sqlite_thread.py), and a closed one's engine
            # is a reference cycle that the GC tuning (app.py) leaves for the complete
            # collection: the soak's memory stepped up with the bursts (docs/benchmarks.md).
            self.reader = create_async_engine(
                self.url, pool_size=READERS + HELD, max_overflow=0, pool_reset_on_return=None
            )
            self._sqlite_setup(self.writer, immediate=True)
            self._sqlite_setup(self.reader, immediate=False)
        else:
            self.writer = create_async_engine(
                self.url,
                pool_size=10,
                max_overflow=10,
                pool_pre_ping=True,
                connect_args=PG_CONNECT,
            )
            # Reads in autocommit: no BEGIN/ROLLBACK, and a pool check of one round trip, not
            # three (in a transaction): four round trips less per read call. Nothing is lost:
            # under READ COMMITTED each statement takes its own snapshot in a transaction too.
            self.reader = create_async_engine(
                self.url,
                pool_size=5,
                max_overflow=5,
                pool_pre_ping=True,
                isolation_level="AUTOCOMMIT",
                connect_args=PG_CONNECT,
            )
        await migrate.upgrade(self.writer)
        if self.sqlite:
            for _ in range(HELD):
                conn = await self.reader.connect()
                self._held.append(conn)
                worker = sqlite_thread.worker_of(await conn.get_raw_connection())
                if worker is not None:
                    self._idle.append(worker)

    def _sqlite_setup(self, engine: AsyncEngine, *, immediate: bool) -> None:
        synchronous = self._synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        @event.listens_for(engine.sync_engine, "reset")
        def on_reset(dbapi_conn: Any, _record: Any, state: PoolResetState) -> None:
            """The pool's rollback on return, only when a transaction is open. A one-trip
            transaction (store/sqlite_thread.py) has committed or rolled back on the
            database's thread already, and the rollback after it was a second hand-off to
            that thread for each publish's commit, for nothing."""
            if state.terminate_only or not state.asyncio_safe or state.transaction_was_reset:
                return
            if sqlite_thread.in_transaction(dbapi_conn):
                dbapi_conn.rollback()

    async def close(self) -> None:
        self._idle.clear()
        for conn in self._held:
            await conn.close()
        self._held.clear()
        await self.writer.dispose()
        await self.reader.dispose()

    async def ping(self) -> None:
        try:
            async with self.reader.connect() as conn:
                await conn.execute(select(literal(1)))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc

    def write(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """One write transaction (SQLite: the one writer, `BEGIN IMMEDIATE`)."""
        return _guard(self.writer.begin())

    def read(self) -> AbstractAsyncContextManager[AsyncConnection]:
        return _guard(self.reader.connect())

    def consistent(self) -> AbstractAsyncContextManager[AsyncConnection]:
        """A read whose statements all see one snapshot, for answers built from several
        (an unread count: its facts, then probes that subtract what they found). SQLite's
        read transaction is one snapshot already; PostgreSQL's autocommit reads take one per
        statement, so an expiry sweep committing between two of them made a count subtract
        the same routes twice: here they run in one REPEATABLE READ READ ONLY transaction."""
        if self.sqlite:
            return self.read()
        return _guard(_snapshot(self.reader))

    async def reading(self, fn: Callable[[Connection], T], *, one_snapshot: bool = True) -> T:
        """`fn(sync_connection)` reading, its statements in one trip: all in one snapshot (as
        `consistent()`), or with `one_snapshot=False` as `read()` (on PostgreSQL a snapshot per
        statement, no transaction to begin and end). On SQLite it runs on a reader held out of
        the pool when one is free (no checkout: the hot reads, counts, pages and snapshots,
        each spent more CPU checking a connection out and in than SQLite spent on a small
        one), in one read transaction either way."""
        if self._idle:
            async with _guard(self._lend()) as worker:
                return await sqlite_thread.on(worker, fn)
        async with self.consistent() if one_snapshot else self.read() as conn:
            return await self.run(conn, fn)

    @asynccontextmanager
    async def _lend(self) -> AsyncIterator[Any]:
        """A held reader's aiosqlite connection, given back after (unless closed meanwhile)."""
        worker = self._idle.pop()
        try:
            yield worker
        finally:
            if self._held:
                self._idle.append(worker)

    async def run(self, conn: AsyncConnection, fn: Callable[[Connection], T]) -> T:
        """`fn(sync_connection)` in `conn`'s transaction, its statements in one trip: on SQLite
        one hand-off to the connection's thread (store/sqlite_thread.py) instead of four per
        statement; on PostgreSQL `run_sync`, one greenlet for all of them. On a `read()`
        connection `fn` only reads."""
        if isinstance(conn, Inline):  # already on the database's side (store/inline.py)
            return fn(conn.sync)
        if self.sqlite:
            return await sqlite_thread.run(conn, fn)
        return await conn.run_sync(fn)

    async def transact(self, fn: Callable[[Connection], T], *, snapshot: bool = False) -> T:
        """`fn(sync_connection)` in a write transaction of its own, begun, run and committed
        in one trip (SQLite: `BEGIN IMMEDIATE` ... `COMMIT` on the writer's thread, instead of
        a trip for each); rolled back if `fn` raises.

        `snapshot`: `fn` writes what it read (a state change's event carries the unread count
        as of its own seq). SQLite's one writer gives that already; on PostgreSQL it runs in
        REPEATABLE READ, and again, from the start, when a concurrent commit touched what it
        writes (a publish to the user's stream took a seq after this one's snapshot) or
        changed what it counted under it (a sweep hid routes): `fn` must be pure of side
        effects outside its connection."""
        if self.sqlite:
            async with _guard(self.writer.connect()) as conn:
                return await sqlite_thread.transact(conn, fn)
        if not snapshot:
            async with self.write() as conn:
                return await conn.run_sync(fn)
        for attempt in range(SNAPSHOT_TRIES):
            try:
                async with self.writer.connect() as conn:
                    conn = await conn.execution_options(isolation_level="REPEATABLE READ")
                    async with conn.begin():
                        return await conn.run_sync(fn)
            except IntegrityError:
                raise
            except DBAPIError as exc:
                retry = getattr(exc.orig, "sqlstate", None) in RETRYABLE
                if not retry or attempt == SNAPSHOT_TRIES - 1:
                    raise _unavailable(exc) from exc
                await asyncio.sleep(random.uniform(0, 0.002 * 2**attempt))
            except (SATimeoutError, OSError) as exc:
                raise _unavailable(exc) from exc
        raise AssertionError("unreachable")

    async def insert_rows(
        self, conn: AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
    ) -> None:
        """`conn.execute(insert(table), rows)`. Inside a one-trip SQLite transaction the rows
        go to `sqlite3`'s `executemany` without SQLAlchemy binding each one (store/raw.py):
        the publish's inserts, a third of its transaction's CPU that way."""
        if self.sqlite and isinstance(conn, Inline):
            raw.insert_rows(conn.sync, table, rows)
        elif rows:
            await conn.execute(insert(table), rows)

    async def select_in(
        self, conn: AsyncConnection, stmt: Any, lists: Mapping[str, Sequence[Any]]
    ) -> list[Any]:
        """The rows of `stmt`, built once with `IN` lists as expanding bind parameters, for
        `lists`. Inside a one-trip SQLite transaction read straight from `sqlite3`
        (store/raw.py): every publish's in-app choices, whose compile and binding through
        SQLAlchemy cost more than the lookup."""
        if self.sqlite and isinstance(conn, Inline):
            return raw.select_in(conn.sync, stmt, lists)
        return list((await conn.execute(stmt, {k: list(v) for k, v in lists.items()})).all())

    def insert(self, table: Any) -> Any:
        """The dialect's INSERT, for `on_conflict_do_update` / `on_conflict_do_nothing`."""
        return sqlite_insert(table) if self.sqlite else pg_insert(table)


def aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        conn = await conn.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        async with conn.begin():
            yield conn


@asynccontextmanager
async def _guard(ctx: Any) -> AsyncIterator[Any]:
    """Turn a lost database into `StoreUnavailable` (503): nothing is acknowledged."""
    try:
        async with ctx as conn:
            yield conn
    except IntegrityError:
        raise
    except (DBAPIError, SATimeoutError, OSError) as exc:
        raise _unavailable(exc) from exc


def _unavailable(exc: BaseException) -> StoreUnavailable:
    # Logged without the statement's parameters (they may hold user data).
    log.warning("store unavailable: %s", str(getattr(exc, "orig", exc))[:300])
    return StoreUnavailable()
