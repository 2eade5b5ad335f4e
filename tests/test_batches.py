"""Batches whose SQL text does not change with their size (store/batches.py).

Every distinct SQL text is a prepared statement in its connection's cache (Python's `sqlite3`
keeps 128, asyncpg 100), and one rendered per batch size grew the server's memory with each
reconnect wave of the soak (docs/benchmarks.md, Soak). Checked on a real SQLite file and a real
PostgreSQL database: batches of sizes between 65 and 128 must all run the same SQL.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any
from unittest import mock

from sqlalchemy import Engine, event, insert, select
from sqlalchemy.engine.default import CACHE_HIT

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore, holes, raw
from clarion.store.batches import in_lists, padded
from clarion.store.schema import streams

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_padding_takes_a_few_sizes_and_changes_no_membership() -> None:
    sizes = {len(padded(range(n))) for n in range(1, 1025)}
    assert sizes == {2**k for k in range(11)}
    for n in (1, 5, 64, 65, 1000):
        items = [f"u{i}" for i in range(n)]
        out = padded(items)
        assert out[:n] == items and set(out) == set(items)
    assert padded([]) == []
    chunks = list(in_lists(list(range(1100)), size=512))
    assert [len(c) for c in chunks] == [512, 512, 128]
    assert sorted(set().union(*map(set, chunks))) == list(range(1100))


class Statements:
    """The SQL texts sent to the database by any engine, the per-connection ones of
    store/sqlite_thread.py included (the listener is on the Engine class)."""

    def __init__(self) -> None:
        self.texts: set[str] = set()

    def __enter__(self) -> Statements:
        event.listen(Engine, "before_cursor_execute", self._seen)
        raw.WATCHERS.append(self.texts.add)  # what SQLite reads without SQLAlchemy (raw.query)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(Engine, "before_cursor_execute", self._seen)
        raw.WATCHERS.remove(self.texts.add)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.texts.add(statement)


def users(n: int, tag: str) -> list[str]:
    return [f"{tag}-{n}-{i}" for i in range(n)]


SIZES = (65, 77, 90, 101, 116, 120)  # padded to 128, with room for a few shared streams


async def texts_by_size(run: Any) -> list[set[str]]:
    """The SQL texts of `run(n)` for batch sizes n between 65 and 128, one set per n."""
    out = []
    for n in SIZES:
        with Statements() as seen:
            await run(n)
        out.append(seen.texts)
    return out


def assert_one_sql(per_size: list[set[str]]) -> None:
    first = per_size[0]
    assert first
    new = set().union(*per_size) - first
    assert not new, f"{len(new)} more SQL texts for other sizes, e.g. {sorted(new)[0][:200]}"


async def test_presence_batches_of_any_size_run_the_same_sql(sql_store: SQLStore) -> None:
    async def flush(n: int) -> None:
        counts = {(u, "ws"): 1 for u in users(n, "p")}
        await sql_store.presence.write("node-a", counts, NOW, 30)

    assert_one_sql(await texts_by_size(flush))


async def test_online_comings_and_goings_of_any_size_run_the_same_sql(sql_store: SQLStore) -> None:
    async def come_and_go(n: int) -> None:
        came = users(n, "o")
        counts = {(u, "ws"): 1 for u in came}
        await sql_store.presence.write("node-o", counts, NOW, 30, came, users(n, "o-gone"))

    assert_one_sql(await texts_by_size(come_and_go))


async def test_audience_syncs_of_any_size_run_the_same_sql(sql_store: SQLStore) -> None:
    async def sync(n: int) -> None:
        await sql_store.sync_audiences([(u, ["all", "role:staff"], []) for u in users(n, "a")])

    assert_one_sql(await texts_by_size(sync))


async def test_heads_of_any_number_of_streams_run_the_same_sql(sql_store: SQLStore) -> None:
    async def heads(n: int) -> None:
        got = await sql_store.heads([f"user:{u}" for u in users(n, "h")])
        assert len(got) == n and set(got.values()) == {0}

    assert_one_sql(await texts_by_size(heads))


async def test_snapshot_batches_of_any_size_run_the_same_sql(sql_store: SQLStore) -> None:
    """A storm of handshakes reads its snapshots together (hub.py): users, the heads of their
    streams and their unread windows (one per user here: each personal stream has events)."""

    async def snapshots(n: int) -> None:
        names = users(n, "s")
        async with sql_store.db.write() as conn:
            await conn.execute(insert(streams), [{"name": f"user:{u}", "seq": 3} for u in names])
        got = await sql_store.snapshots([(u, ["all"], True) for u in names])
        assert len(got) == n

    assert_one_sql(await texts_by_size(snapshots))


async def test_snapshots_mixing_window_shapes_run_no_sql_of_their_own(sql_store: SQLStore) -> None:
    """The unread windows of a storm's batch come in shapes (here: ranges within one hole
    bucket, and ranges spanning several). Each shape's windows are probed in statements of
    their own, so a batch that mixes shapes runs only SQL that batches of one shape run too:
    in a connect storm of users with history, every mix of group sizes had been a statement
    of its own, compiled anew (a third of a handshake's CPU, docs/benchmarks.md)."""
    made = iter(range(1_000_000))

    async def snapshots(short: int, long: int) -> None:
        batch = [(u, 3) for u in users(short, f"w{next(made)}")]
        batch += [(u, 3000) for u in users(long, f"w{next(made)}")]  # spans three buckets
        async with sql_store.db.write() as conn:
            await conn.execute(insert(streams), [{"name": f"user:{u}", "seq": s} for u, s in batch])
        got = await sql_store.snapshots([(u, ["all"], True) for u, _ in batch])
        assert len(got) == len(batch)

    with Statements() as alone:
        for n in range(1, 9):
            await snapshots(n, 0)
            await snapshots(0, n)
    with Statements() as mixed:
        for short in range(1, 5):
            for long in range(1, 5):
                await snapshots(short, long)
    new = mixed.texts - alone.texts
    assert not new, f"{len(new)} SQL texts only for mixed batches, e.g. {sorted(new)[0][:300]}"


async def test_sqlite_compiles_a_statement_once_whatever_connection_runs_it(tmp_path: Any) -> None:
    """The reader pool's connections (and the overflow ones it opens and drops in a storm)
    share one compiled form of each statement: a snapshot read on a second connection finds
    every statement compiled by the first (store/sqlite_thread.py)."""
    store = SQLStore(f"sqlite:///{tmp_path / 'once.db'}")
    await store.connect()
    try:
        names = users(40, "once")
        async with store.db.write() as conn:
            await conn.execute(insert(streams), [{"name": f"user:{u}", "seq": 3} for u in names])
        batch = [(u, ["all"], True) for u in names]
        misses: list[str] = []

        def seen(_c: Any, _cur: Any, statement: str, _p: Any, context: Any, _m: bool) -> None:
            if context.cache_hit != CACHE_HIT:
                misses.append(statement)

        await store.snapshots(batch)  # compiled here, on the pool's first connection
        async with store.db.read() as held:  # that one stays busy: the next read gets another
            await held.execute(select(1))
            event.listen(Engine, "before_cursor_execute", seen)
            try:
                await store.snapshots(batch)
            finally:
                event.remove(Engine, "before_cursor_execute", seen)
        assert not misses, f"{len(misses)} compiled again, e.g. {misses[0][:200]}"
    finally:
        await store.close()


async def test_a_storm_batch_counts_each_user_as_a_count_alone_does(sql_store: SQLStore) -> None:
    """A batch's windows are probed several statements to a shape (8 windows each on SQLite,
    the last padded: store/inbox.py `_probe_chunks`); each user's count must still be its own.
    Buckets of 2 seqs make most windows span several, and collapsed notifications hide routes
    in them; some users have read part of their history."""
    tag = secrets.token_hex(3)
    names = [f"storm-{tag}-{i}" for i in range(27)]
    with mock.patch.object(holes, "BUCKET_BITS", 1), mock.patch.object(holes, "COARSE_BITS", 1):
        for i, user in enumerate(names):
            for j in range(i % 9 + 1):
                key = f"k{j % 2}" if i % 3 == 0 else None  # collapsed: the older one is hidden
                await sql_store.publish([_draft(user, "message" if j % 4 else "alert", key)])
            if i % 4 == 1:
                await sql_store.change_state(user, "read_all", None)
                await sql_store.publish([_draft(user, "message", None)])
        alone = [await sql_store.unread_count(u) for u in names]
        got = await sql_store.snapshots([(u, ["all"], True) for u in names])
    # Unread: 1 after a read-all; else one per notification, one per key where collapsed.
    want = [1 if i % 4 == 1 else min(i % 9 + 1, 2 if i % 3 == 0 else 9) for i in range(27)]
    assert alone == want
    assert [s.unread for s in got] == want


def _draft(user: str, type: str, collapse_key: str | None) -> Draft:
    nid = new_id()
    doc = notification_doc(nid, iso(NOW), type=type, priority="normal", title=nid)
    return Draft(nid, type, "normal", doc, NOW, collapse_key=collapse_key, users=[user])
