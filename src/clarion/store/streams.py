"""Streams in the store: per-stream seqs allocated in the writing transaction, heads, replay."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, Integer, and_, bindparam, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Meta, StoredEvent, utcnow
from clarion.events import stored_meta
from clarion.store.batches import in_lists
from clarion.store.db import Database
from clarion.store.schema import events, routes, stream_types, streams


async def allocate(db: Database, conn: AsyncConnection, counts: dict[str, int]) -> dict[str, int]:
    """Advance each stream by its count in one statement; returns the new heads. Sorted,
    so concurrent writers lock stream rows in one order (no deadlocks on PostgreSQL)."""
    rows = [{"name": n, "seq": counts[n]} for n in sorted(counts)]
    return {name: seq for name, seq in (await conn.execute(_ALLOCATE[db.sqlite], rows)).all()}


def allocate_in(db: Database, conn: Connection, counts: dict[str, int]) -> dict[str, int]:
    """`allocate` on a synchronous connection (inside `Database.run`)."""
    rows = [{"name": n, "seq": counts[n]} for n in sorted(counts)]
    return {name: seq for name, seq in conn.execute(_ALLOCATE[db.sqlite], rows).all()}


def _allocating(insert: Any) -> Any:
    stmt = insert(streams)
    return stmt.on_conflict_do_update(
        index_elements=["name"], set_={"seq": streams.c.seq + stmt.excluded.seq}
    ).returning(streams.c.name, streams.c.seq)


def _advancing(insert: Any) -> Any:
    """`streams` rows advanced by the seqs (and routes) a publish takes, created where missing."""
    stmt = insert(streams)
    return stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "seq": streams.c.seq + stmt.excluded.seq,
            "routed": streams.c.routed + stmt.excluded.routed,
        },
    ).returning(streams.c.name, streams.c.seq, streams.c.routed)


def _advancing_types(insert: Any) -> Any:
    stmt = insert(stream_types)
    return stmt.on_conflict_do_update(
        index_elements=["stream", "type"], set_={"n": stream_types.c.n + stmt.excluded.n}
    ).returning(stream_types.c.stream, stream_types.c.type, stream_types.c.n)


# Built once per dialect and run with a list of rows (SQLAlchemy's "insertmanyvalues" makes
# them one multi-row statement from the cached compilation): an INSERT with its rows baked in
# by `.values([...])` has no cache key, so it was compiled again on every publish (#11).
_ALLOCATE = {True: _allocating(sqlite_insert), False: _allocating(pg_insert)}
_ADVANCE = {True: _advancing(sqlite_insert), False: _advancing(pg_insert)}
_ADVANCE_TYPES = {True: _advancing_types(sqlite_insert), False: _advancing_types(pg_insert)}


async def advance(
    db: Database, conn: AsyncConnection, counts: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Advance each stream's (seq, routes) heads by its count in one statement, which holds
    the rows locked until the transaction ends; returns the heads before (what a publish
    numbers from: gap-free, as no other writer passes the lock). Sorted, so concurrent
    publishers lock stream rows in one order and cannot deadlock."""
    rows = [{"name": n, "seq": counts[n], "routed": counts[n]} for n in sorted(counts)]
    got = (await conn.execute(_ADVANCE[db.sqlite], rows)).all()
    return {name: (seq - counts[name], routed - counts[name]) for name, seq, routed in got}


async def advance_types(
    db: Database, conn: AsyncConnection, counts: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """How many routes per shared stream and type there were (muted types are subtracted by
    these ordinals), advanced by `counts` and locked as in `advance`."""
    rows = [{"stream": s, "type": t, "n": counts[(s, t)]} for s, t in sorted(counts)]
    got = (await conn.execute(_ADVANCE_TYPES[db.sqlite], rows)).all()
    return {(s, t): n - counts[(s, t)] for s, t, n in got}


HEADS = select(streams.c.name, streams.c.seq).where(
    streams.c.name.in_(bindparam("names", expanding=True))
)


async def heads_in(conn: AsyncConnection, names: list[str]) -> dict[str, int]:
    """Each stream's last seq (0 for a stream that has none yet), inside `conn`'s transaction;
    the names go in padded chunks, so their number does not change the SQL (batches.py)."""
    found: dict[str, int] = {}
    for chunk in in_lists(names):
        found |= {name: seq for name, seq in (await conn.execute(HEADS, {"names": chunk})).all()}
    return {n: found.get(n, 0) for n in names}


def heads_of(conn: Connection, names: list[str]) -> dict[str, int]:
    """`heads_in` on a synchronous connection (inside `Database.run`)."""
    found: dict[str, int] = {}
    for chunk in in_lists(names):
        found |= {name: seq for name, seq in conn.execute(HEADS, {"names": chunk}).all()}
    return {n: found.get(n, 0) for n in names}


class StreamReads:
    """Heads and replay, for the hub's gap filling and for resuming connections."""

    db: Database

    async def heads(self, names: list[str]) -> dict[str, int]:
        """Heads of any number of streams (the hub checks all it holds), in one trip."""

        return await self.db.reading(lambda c: heads_of(c, names), one_snapshot=False)

    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        params = {"stream": stream, "seq": seq, "now": utcnow(), "limit": limit}
        rows = await self.db.reading(
            lambda c: c.execute(EVENTS_AFTER, params).all(), one_snapshot=False
        )
        return [
            StoredEvent(stream, s, bytes(p), _meta(kind, bytes(p), type, also))
            for s, p, kind, type, also in rows
        ]


_ON_ROUTE = and_(routes.c.stream == events.c.stream, routes.c.seq == events.c.seq)
# A replay page (built once: a reconnect storm reads one per stream per connection).
EVENTS_AFTER = (
    select(events.c.seq, events.c.payload, events.c.kind, routes.c.type, routes.c.also)
    .select_from(events.outerjoin(routes, _ON_ROUTE))
    .where(
        events.c.stream == bindparam("stream"),
        events.c.seq > bindparam("seq"),
        or_(events.c.expires_at.is_(None), events.c.expires_at > bindparam("now")),
    )
    .order_by(events.c.seq)
    .limit(bindparam("limit", type_=Integer))
)


def _meta(kind: str, payload: bytes, type: str | None, also: bytes | None) -> Meta:
    """A stored event's metadata: a notification's from its route, others' from their kind."""
    if type is None:
        return stored_meta(kind, payload)
    return Meta(kind, type, orjson.loads(also) if also else None)
