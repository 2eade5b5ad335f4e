"""Streams in the store: per-stream seqs allocated in the writing transaction, heads, replay."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Connection, Integer, and_, bindparam, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Meta, StoredEvent, utcnow
from clarion.events import stored_meta
from clarion.store.batches import in_lists
from clarion.store.db import Database
from clarion.store.schema import events, routes, stream_types, streams


async def allocate(db: Database, conn: AsyncConnection, counts: dict[str, int]) -> dict[str, int]:
    """Advance each stream by its count in one statement; returns the new heads. Sorted,
    so concurrent writers lock stream rows in one order (no deadlocks on PostgreSQL)."""
    rows = (await conn.execute(_allocation(db, counts))).all()
    return {name: seq for name, seq in rows}


def allocate_in(db: Database, conn: Connection, counts: dict[str, int]) -> dict[str, int]:
    """`allocate` on a synchronous connection (inside `Database.run`)."""
    return {name: seq for name, seq in conn.execute(_allocation(db, counts)).all()}


def _allocation(db: Database, counts: dict[str, int]) -> Any:
    stmt = db.insert(streams).values([{"name": n, "seq": counts[n]} for n in sorted(counts)])
    return stmt.on_conflict_do_update(
        index_elements=["name"], set_={"seq": streams.c.seq + stmt.excluded.seq}
    ).returning(streams.c.name, streams.c.seq)


async def lock_heads(
    db: Database, conn: AsyncConnection, names: list[str]
) -> dict[str, tuple[int, int]]:
    """Each stream's (seq, routes) heads, its row locked until the transaction ends (created
    at 0 where missing), in sorted order so concurrent publishers cannot deadlock. A publish
    plans its seqs from these and writes the new heads with `set_heads`."""
    names = sorted(names)
    stmt = db.insert(streams).values([{"name": n, "seq": 0, "routed": 0} for n in names])
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"seq": streams.c.seq}
    ).returning(streams.c.name, streams.c.seq, streams.c.routed)
    return {name: (seq, routed) for name, seq, routed in (await conn.execute(stmt)).all()}


async def set_heads(db: Database, conn: AsyncConnection, heads: dict[str, tuple[int, int]]) -> None:
    """Write the heads a publish planned on rows `lock_heads` holds."""
    rows = [{"name": n, "seq": heads[n][0], "routed": heads[n][1]} for n in sorted(heads)]
    stmt = db.insert(streams).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={"seq": stmt.excluded.seq, "routed": stmt.excluded.routed},
    )
    await conn.execute(stmt)


async def lock_type_heads(
    db: Database, conn: AsyncConnection, keys: list[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """How many routes per shared stream and type there are (muted types are subtracted by
    these ordinals), rows locked as in `lock_heads`."""
    keys = sorted(keys)
    stmt = db.insert(stream_types).values([{"stream": s, "type": t, "n": 0} for s, t in keys])
    stmt = stmt.on_conflict_do_update(
        index_elements=["stream", "type"], set_={"n": stream_types.c.n}
    ).returning(stream_types.c.stream, stream_types.c.type, stream_types.c.n)
    return {(s, t): n for s, t, n in (await conn.execute(stmt)).all()}


async def set_type_heads(
    db: Database, conn: AsyncConnection, heads: dict[tuple[str, str], int]
) -> None:
    stmt = db.insert(stream_types).values(
        [{"stream": s, "type": t, "n": heads[(s, t)]} for s, t in sorted(heads)]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["stream", "type"], set_={"n": stmt.excluded.n}
    )
    await conn.execute(stmt)


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

        async with self.db.read() as conn:
            return await self.db.run(conn, lambda c: heads_of(c, names))

    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        params = {"stream": stream, "seq": seq, "now": utcnow(), "limit": limit}
        async with self.db.read() as conn:
            rows = await self.db.run(conn, lambda c: c.execute(EVENTS_AFTER, params).all())
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
