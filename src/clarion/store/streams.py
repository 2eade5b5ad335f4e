"""Streams in the store: per-stream seqs allocated in the writing transaction, heads, replay."""

from __future__ import annotations

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import StoredEvent, utcnow
from clarion.store.db import Database
from clarion.store.schema import events, stream_types, streams


async def allocate(db: Database, conn: AsyncConnection, counts: dict[str, int]) -> dict[str, int]:
    """Advance each stream by its count in one statement; returns the new heads. Sorted,
    so concurrent writers lock stream rows in one order (no deadlocks on PostgreSQL)."""
    stmt = db.insert(streams).values([{"name": n, "seq": counts[n]} for n in sorted(counts)])
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"], set_={"seq": streams.c.seq + stmt.excluded.seq}
    ).returning(streams.c.name, streams.c.seq)
    rows = (await conn.execute(stmt)).all()
    return {name: seq for name, seq in rows}


async def allocate_routed(
    db: Database, conn: AsyncConnection, counts: dict[str, int]
) -> dict[str, tuple[int, int]]:
    """Like `allocate`, for notification events: each also counts as a route of its stream.
    Returns the new (seq, routes) heads; the routes just added are numbered up to the second."""
    rows = [{"name": n, "seq": counts[n], "routed": counts[n]} for n in sorted(counts)]
    stmt = db.insert(streams).values(rows)
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "seq": streams.c.seq + stmt.excluded.seq,
            "routed": streams.c.routed + stmt.excluded.routed,
        },
    ).returning(streams.c.name, streams.c.seq, streams.c.routed)
    return {name: (seq, routed) for name, seq, routed in (await conn.execute(stmt)).all()}


async def number_types(
    db: Database, conn: AsyncConnection, counts: dict[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """Count routes per shared stream and type (muted types are subtracted by these ordinals);
    returns the new heads."""
    keys = sorted(counts)
    stmt = db.insert(stream_types).values(
        [{"stream": s, "type": t, "n": counts[(s, t)]} for s, t in keys]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["stream", "type"], set_={"n": stream_types.c.n + stmt.excluded.n}
    ).returning(stream_types.c.stream, stream_types.c.type, stream_types.c.n)
    return {(s, t): n for s, t, n in (await conn.execute(stmt)).all()}


async def heads_in(conn: AsyncConnection, names: list[str]) -> dict[str, int]:
    """Each stream's last seq (0 for a stream that has none yet), inside `conn`'s transaction."""
    if not names:
        return {}
    rows = (
        await conn.execute(select(streams.c.name, streams.c.seq).where(streams.c.name.in_(names)))
    ).all()
    found = {name: seq for name, seq in rows}
    return {n: found.get(n, 0) for n in names}


class StreamReads:
    """Heads and replay, for the hub's gap filling and for resuming connections."""

    db: Database

    async def heads(self, names: list[str]) -> dict[str, int]:
        async with self.db.read() as conn:
            return await heads_in(conn, names)

    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        now = utcnow()
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(events.c.seq, events.c.payload)
                    .where(
                        events.c.stream == stream,
                        events.c.seq > seq,
                        or_(events.c.expires_at.is_(None), events.c.expires_at > now),
                    )
                    .order_by(events.c.seq)
                    .limit(limit)
                )
            ).all()
        return [StoredEvent(stream, s, bytes(p)) for s, p in rows]
