"""`Database.run`: a call's statements in one trip, inside the caller's transaction, on SQLite
(the aiosqlite connection's own thread) and PostgreSQL (`run_sync`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy import Connection, event, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import StoreUnavailable
from clarion.store import sqlite_thread
from clarion.store.db import HELD, READERS, Database
from clarion.store.inline import Suspended, inline
from clarion.store.schema import streams


@pytest.fixture
async def db(sql_url: str) -> AsyncIterator[Database]:
    database = Database(sql_url)
    await database.connect()
    try:
        yield database
    finally:
        async with database.write() as conn:
            await conn.execute(streams.delete())
        await database.close()


def seq_of(conn: Connection, name: str) -> int | None:
    return conn.execute(select(streams.c.seq).where(streams.c.name == name)).scalar()


async def read_seq(db: Database, name: str) -> int | None:
    async with db.read() as conn:
        return (await conn.execute(select(streams.c.seq).where(streams.c.name == name))).scalar()


async def test_run_writes_in_the_callers_transaction(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(insert(streams).values(name="a", seq=1))

        def bump(c: Connection) -> int | None:
            before = seq_of(c, "a")  # sees the async statement's uncommitted row
            c.execute(update(streams).where(streams.c.name == "a").values(seq=2))
            c.execute(insert(streams).values(name="b", seq=7))
            return before

        assert await db.run(conn, bump) == 1
        # ...and the async side sees what `run` wrote, before the commit
        got = await conn.execute(select(streams.c.seq).where(streams.c.name == "b"))
        assert got.scalar() == 7
    assert await read_seq(db, "a") == 2
    assert await read_seq(db, "b") == 7


async def test_a_failure_after_run_rolls_its_writes_back(db: Database) -> None:
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await db.run(conn, lambda c: c.execute(insert(streams).values(name="c", seq=3)))
            raise RuntimeError("after the run")
    assert await read_seq(db, "c") is None
    # the writer is usable again, and `run` commits with it
    async with db.write() as conn:
        await db.run(conn, lambda c: c.execute(insert(streams).values(name="c", seq=4)))
    assert await read_seq(db, "c") == 4


async def test_an_integrity_error_in_run_propagates_and_rolls_back(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(insert(streams).values(name="d", seq=1))

    def twice(c: Connection) -> None:
        c.execute(insert(streams).values(name="e", seq=1))
        c.execute(insert(streams).values(name="d", seq=2))  # primary key taken

    with pytest.raises(IntegrityError):
        async with db.write() as conn:
            await db.run(conn, twice)
    assert await read_seq(db, "e") is None
    assert await read_seq(db, "d") == 1


async def test_run_reads_on_a_reader_before_and_after_async_statements(db: Database) -> None:
    async with db.write() as conn:
        await conn.execute(insert(streams).values(name="f", seq=5))
    async with db.read() as conn:
        assert await db.run(conn, lambda c: seq_of(c, "f")) == 5  # a transaction of its own
        got = await conn.execute(select(streams.c.seq).where(streams.c.name == "f"))
        assert got.scalar() == 5
        assert await db.run(conn, lambda c: seq_of(c, "f")) == 5  # inside the reader's
    for _ in range(3):  # connections go back to the pool in a clean state and are reused
        async with db.read() as conn:
            assert await db.run(conn, lambda c: seq_of(c, "f")) == 5


async def test_transact_commits_or_rolls_back_in_one_trip(db: Database) -> None:
    await db.transact(lambda c: c.execute(insert(streams).values(name="g", seq=1)))
    assert await read_seq(db, "g") == 1

    def fails(c: Connection) -> None:
        c.execute(update(streams).where(streams.c.name == "g").values(seq=2))
        raise RuntimeError("inside the transaction")

    with pytest.raises(RuntimeError):
        await db.transact(fails)
    assert await read_seq(db, "g") == 1
    with pytest.raises(IntegrityError):
        await db.transact(lambda c: c.execute(insert(streams).values(name="g", seq=3)))
    assert await read_seq(db, "g") == 1


async def test_transactions_take_turns_with_each_other_and_with_write(db: Database) -> None:
    """Concurrent read-modify-write transactions lose no update, whichever API they use."""
    await db.transact(lambda c: c.execute(insert(streams).values(name="h", seq=0)))

    def bump(c: Connection) -> None:  # SQLite: one writer at a time; PostgreSQL: the row lock
        row = select(streams.c.seq).where(streams.c.name == "h").with_for_update()
        seq = c.execute(row).scalar_one()
        c.execute(update(streams).where(streams.c.name == "h").values(seq=seq + 1))

    async def bump_async() -> None:
        async with db.write() as conn:
            await db.run(conn, bump)

    await asyncio.gather(
        *[db.transact(bump) for _ in range(10)], *[bump_async() for _ in range(10)]
    )
    assert await read_seq(db, "h") == 20


async def test_sqlite_takes_the_one_trip_path(db: Database) -> None:
    """The installed aiosqlite still has what `sqlite_thread` borrows (else it would fall back,
    correct but slow, and nothing else would notice)."""
    if not db.sqlite:
        pytest.skip("SQLite only")
    async with db.read() as conn:
        raw = await conn.get_raw_connection()
        assert sqlite_thread._lendable(raw.driver_connection)


async def test_the_fallback_keeps_the_same_transactions(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not db.sqlite:
        pytest.skip("SQLite only")
    monkeypatch.setattr(sqlite_thread, "_lendable", lambda worker: False)
    await db.transact(lambda c: c.execute(insert(streams).values(name="i", seq=1)))
    with pytest.raises(RuntimeError):
        async with db.write() as conn:
            await db.run(conn, lambda c: c.execute(insert(streams).values(name="j", seq=1)))
            raise RuntimeError("after the run")
    async with db.read() as conn:
        assert await db.run(conn, lambda c: seq_of(c, "i")) == 1
        assert await db.run(conn, lambda c: seq_of(c, "j")) is None


async def test_inline_runs_async_store_code_in_one_transact(db: Database) -> None:
    """`store/inline.py`: a room's `AsyncConnection` code (`execute`, `run_sync`, `db.run`)
    runs inside `transact` and commits with it; code that waits on the loop is refused."""

    async def write(conn: AsyncConnection) -> int | None:
        await conn.execute(insert(streams).values(name="inline", seq=1))
        await db.run(conn, lambda c: c.execute(update(streams).values(seq=2)))
        return await conn.run_sync(lambda c: seq_of(c, "inline"))

    assert await db.transact(lambda sync: inline(sync, write)) == 2
    assert await read_seq(db, "inline") == 2

    async def waits(conn: AsyncConnection) -> None:
        await asyncio.sleep(0)

    with pytest.raises(Suspended):
        await db.transact(lambda sync: inline(sync, waits))


async def test_sqlite_readers_are_kept_across_bursts(tmp_path: Path) -> None:
    """A burst of reads opens readers once: none is closed after it and opened again by the
    next (each brings a thread and an engine whose cycle waits for the complete collection)."""
    database = Database(f"sqlite:///{tmp_path / 'c.db'}")
    await database.connect()
    opened = []
    event.listen(database.reader.sync_engine, "connect", lambda conn, record: opened.append(1))

    async def one() -> None:
        async with database.read() as conn:
            await conn.execute(select(streams.c.seq))
            await asyncio.sleep(0.01)  # held together: the burst needs every reader

    try:
        for _ in range(5):
            await asyncio.gather(*(one() for _ in range(2 * READERS)))
        assert len(opened) == READERS
    finally:
        await database.close()


async def test_sqlite_trips_reuse_their_thread_s_connection_record(tmp_path: Path) -> None:
    """Each aiosqlite thread lends its `sqlite3` connection to the shared synchronous engine
    through one kept record: a trip does not run the dialect's connect hooks again (with a new
    record per trip they cost ten times the statements of a small transaction)."""
    database = Database(f"sqlite:///{tmp_path / 'r.db'}")
    await database.connect()
    records: list[int] = []
    listener = lambda conn, record: records.append(id(record))  # noqa: E731
    event.listen(sqlite_thread._SYNC, "connect", listener)
    try:

        async def read() -> int | None:
            async with database.read() as conn:
                return await database.run(conn, lambda c: seq_of(c, "r"))

        await database.transact(lambda c: c.execute(insert(streams).values(name="r", seq=1)))
        for _ in range(10):
            await asyncio.gather(*(read() for _ in range(READERS)))
            await database.transact(
                lambda c: c.execute(update(streams).values(seq=streams.c.seq + 1))
            )
        assert await read() == 11
        assert len(records) <= READERS + 1  # one per thread: the writer's and the readers'
    finally:
        event.remove(sqlite_thread._SYNC, "connect", listener)
        await database.close()


async def test_sqlite_connections_go_back_without_a_rollback_and_reads_stay_fresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every SQLite call ends its own transaction (store/sqlite_thread.py, `write()`'s begin),
    so the pools skip their reset on return, a rollback that cost one more trip to the
    connection's thread per call; a read that fails must still leave no snapshot behind."""
    database = Database(f"sqlite:///{tmp_path / 'f.db'}")
    await database.connect()
    resets: list[int] = []
    rollback = aiosqlite.Connection.rollback

    async def counted(self: aiosqlite.Connection) -> None:
        resets.append(1)
        await rollback(self)

    monkeypatch.setattr(aiosqlite.Connection, "rollback", counted)

    def failing(c: Connection) -> None:
        seq_of(c, "f")
        raise RuntimeError("mid-read")

    async def fails() -> None:
        async with database.read() as conn:
            await database.run(conn, failing)

    async def read() -> int | None:
        async with database.read() as conn:
            value = await database.run(conn, lambda c: seq_of(c, "f"))
            await asyncio.sleep(0.01)  # held together: the reads take every reader
            return value

    try:
        await database.transact(lambda c: c.execute(insert(streams).values(name="f", seq=1)))
        assert await asyncio.gather(*(read() for _ in range(READERS))) == [1] * READERS
        resets.clear()  # SQLAlchemy's first connect of each engine rolls back once
        results = await asyncio.gather(
            *(fails() for _ in range(2 * READERS)), return_exceptions=True
        )
        assert all(isinstance(r, RuntimeError) for r in results)
        async with database.write() as conn:
            await conn.execute(update(streams).values(seq=2))
        assert await asyncio.gather(*(read() for _ in range(READERS))) == [2] * READERS
        assert resets == []
    finally:
        await database.close()


async def test_reading_sees_each_commit_without_a_pool_checkout(db: Database) -> None:
    """`reading` (the counts', pages' and snapshots' reads): each call its own snapshot, taken
    after the last commit; on SQLite on the readers held out of the pool, so a call checks
    nothing out while one of them is free, and a burst past them takes the pool's."""
    checkouts: list[int] = []
    listener = lambda *args: checkouts.append(1)  # noqa: E731
    event.listen(db.reader.sync_engine.pool, "checkout", listener)
    try:
        for seq in range(1, 4):
            await db.transact(
                lambda c, seq=seq: c.execute(
                    insert(streams).values(name="h", seq=seq)
                    if seq == 1
                    else update(streams).where(streams.c.name == "h").values(seq=seq)
                )
            )
            assert await db.reading(lambda c: seq_of(c, "h")) == seq
            assert await db.reading(lambda c: seq_of(c, "h"), one_snapshot=False) == seq
        if db.sqlite:
            assert checkouts == []

        def slow(c: Connection) -> int | None:
            c.exec_driver_sql("SELECT 1")  # a statement, so the read holds its snapshot
            return seq_of(c, "h")

        async def held_together() -> int | None:
            return await db.reading(slow)

        got = await asyncio.gather(*(held_together() for _ in range(3 * HELD)))
        assert got == [3] * (3 * HELD)
    finally:
        event.remove(db.reader.sync_engine.pool, "checkout", listener)


async def test_reading_turns_a_database_error_into_a_503_and_keeps_its_reader(
    db: Database,
) -> None:
    with pytest.raises(StoreUnavailable):
        await db.reading(lambda c: c.exec_driver_sql("SELECT * FROM no_such_table").all())
    if db.sqlite:
        assert len(db._idle) == HELD  # given back: the next reads still skip the pool
    await db.transact(lambda c: c.execute(insert(streams).values(name="e", seq=5)))
    assert await db.reading(lambda c: seq_of(c, "e")) == 5
