"""Presence in the store: each node's live connections per user and transport.

Presence goes through the store rather than the broker: a broker message is a hint that a node
may miss (the broker is not the source of truth, and a node that starts later would never hear
of connections made before it), while rows are there for any node to read at any time. Each
node writes only what changed since its last batch (about once a second), and one heartbeat
statement keeps its rows alive; a node that dies stops refreshing them, and its rows stop
counting after `stale` seconds, with no one to clean up after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.batches import in_lists
from clarion.store.db import Database
from clarion.store.schema_control import last_seen, presence


async def totals(
    conn: AsyncConnection, users: list[str], now: datetime, stale: float
) -> dict[str, int]:
    """Live connections per user over every node that is alive."""
    p = presence.c
    out: dict[str, int] = {}
    for chunk in in_lists(users):
        rows = await conn.execute(
            select(p.user_id, func.sum(p.connections))
            .where(p.user_id.in_(chunk), p.alive_at > now - timedelta(seconds=stale))
            .group_by(p.user_id)
        )
        out |= {u: int(n) for u, n in rows.all()}
    return out


class PresenceStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(
        self,
        node: str,
        counts: Mapping[tuple[str, str], int],
        now: datetime,
        stale: float,
    ) -> tuple[list[str], list[str]]:
        """Store this node's counts that changed (user, transport) -> connections, and
        refresh its heartbeat; returns the users that came online and went offline across
        the cluster with this batch."""
        users = sorted({u for u, _ in counts})
        async with self.db.write() as conn:
            before = await totals(conn, users, now, stale)
            p = presence.c
            if gone := [(u, v) for (u, v), n in counts.items() if n <= 0]:
                for u, v in gone:
                    await conn.execute(
                        delete(presence).where(
                            and_(p.node == node, p.user_id == u, p.transport == v)
                        )
                    )
            # Upserts as one statement with a list of parameters (executemany): compiled once
            # and cached, not a multi-row VALUES compiled anew for each batch's size.
            if live := [(u, v, n) for (u, v), n in counts.items() if n > 0]:
                stmt = self.db.insert(presence)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["node", "user_id", "transport"],
                        set_={
                            "connections": stmt.excluded.connections,
                            "alive_at": stmt.excluded.alive_at,
                        },
                    ),
                    [
                        {
                            "node": node,
                            "user_id": u,
                            "transport": v,
                            "connections": n,
                            "alive_at": now,
                        }
                        for u, v, n in sorted(live)
                    ],
                )
            await conn.execute(update(presence).where(p.node == node).values(alive_at=now))
            after = await totals(conn, users, now, stale)
            if users:
                stmt = self.db.insert(last_seen)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["user_id"], set_={"at": stmt.excluded.at}
                    ),
                    [{"user_id": u, "at": now} for u in users],
                )
        came = [u for u in users if not before.get(u) and after.get(u)]
        left = [u for u in users if before.get(u) and not after.get(u)]
        return came, left

    async def heartbeat(self, node: str, now: datetime) -> None:
        """Keep this node's rows counting, and move the last-seen time of its users."""
        async with self.db.write() as conn:
            await conn.execute(update(presence).where(presence.c.node == node).values(alive_at=now))

    async def leave(self, node: str) -> None:
        """A node stopping cleanly takes its rows along."""
        async with self.db.write() as conn:
            await conn.execute(delete(presence).where(presence.c.node == node))

    async def of(
        self, user: str, now: datetime, stale: float
    ) -> tuple[dict[str, int], datetime | None]:
        """A user's live connections by transport (over every live node) and last-seen time."""
        p = presence.c
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(p.transport, func.sum(p.connections))
                .where(p.user_id == user, p.alive_at > now - timedelta(seconds=stale))
                .group_by(p.transport)
            )
            by = {v: int(n) for v, n in rows.all() if n}
            seen = (
                await conn.execute(select(last_seen.c.at).where(last_seen.c.user_id == user))
            ).scalar()
        return by, seen
