"""Each node's stats snapshot, one row per node rewritten about once a second (stats.py).

The store rather than the broker, as for presence (store/presence.py): the broker's channels
carry stream events in seq order, each refilled from the store when lost; a snapshot is no
stream event, and a channel of its own would mean a sixth broker method in every backend.
A row is there for whichever node answers the console, whenever it asks, with any broker
(the in-process one included), at the cost of one upsert per node and second on a
one-row-per-node table.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, select

from clarion.store.db import Database, aware
from clarion.store.schema_control import nodes

FORGET = timedelta(hours=1)  # a node silent this long loses its row (it is long left out)


class NodeStats:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(self, node: str, stats: bytes, now: datetime) -> None:
        """This node's snapshot; rows of nodes gone for long are removed on the way."""
        async with self.db.write() as conn:
            stmt = self.db.insert(nodes).values(node=node, alive_at=now, stats=stats)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["node"], set_={"alive_at": now, "stats": stats}
                )
            )
            await conn.execute(delete(nodes).where(nodes.c.alive_at < now - FORGET))

    async def alive(self, since: datetime) -> list[tuple[str, datetime, bytes]]:
        """Snapshots written at `since` or later: (node, when, stats)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(nodes.c.node, nodes.c.alive_at, nodes.c.stats)
                .where(nodes.c.alive_at >= since)
                .order_by(nodes.c.node)
            )
            return [(n, aware(at), bytes(s)) for n, at, s in rows.all()]

    async def leave(self, node: str) -> None:
        """A node stopping cleanly drops off at once."""
        async with self.db.write() as conn:
            await conn.execute(delete(nodes).where(nodes.c.node == node))
