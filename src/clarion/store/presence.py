"""Presence in the store: each node's live connections per user and transport.

Presence goes through the store rather than the broker: a broker message is a hint that a node
may miss (the broker is not the source of truth, and a node that starts later would never hear
of connections made before it), while rows are there for any node to read at any time. Each
node writes only what changed since its last batch (about once a second) and one `node_beats`
row: its heartbeat, one statement whatever it holds (with nothing changed, only every few
seconds: clarion/presence.py `idle_beat`). Presence and `online` rows count while
their node's beat is fresh, so a node that dies stops counting after `stale` seconds with no
one to clean up after it; a node silent for `FORGET` has its rows closed and removed (a few
per sweep), and `online` intervals older than any escalation can ask about go too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, case, delete, func, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.batches import in_lists
from clarion.store.db import Database, aware
from clarion.store.schema import online
from clarion.store.schema_control import last_seen, node_beats, presence

FORGET = timedelta(hours=1)  # a node silent this long has its rows closed and removed
# An `online` interval ended this long ago answers no escalation (`after` is at most 30 days).
KEEP = timedelta(days=30, hours=1)
SWEEP = 1000  # rows removed per sweep at most: the sweep stays small whatever is held


def _alive(now: datetime, stale: float) -> Any:
    """The join condition of a row on its node's fresh beat."""
    b = node_beats.c
    return and_(b.node == presence.c.node, b.alive_at > now - timedelta(seconds=stale))


async def totals(
    conn: AsyncConnection, users: list[str], now: datetime, stale: float
) -> dict[str, int]:
    """Live connections per user over every node that is alive."""
    p = presence.c
    out: dict[str, int] = {}
    for chunk in in_lists(users):
        rows = await conn.execute(
            select(p.user_id, func.sum(p.connections))
            .select_from(presence.join(node_beats, _alive(now, stale)))
            .where(p.user_id.in_(chunk))
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
        arrived: Sequence[str] = (),
        departed: Sequence[str] = (),
    ) -> tuple[list[str], list[str]]:
        """Store this node's counts that changed (user, transport) -> connections, the users
        whose first connection on this node opened (`arrived`) or whose last one closed
        (`departed`), and its heartbeat; returns the users that came online and went offline
        across the cluster with this batch."""
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
                        set_={"connections": stmt.excluded.connections},
                    ),
                    [
                        {
                            "node": node,
                            "user_id": u,
                            "transport": v,
                            "connections": n,
                        }
                        for u, v, n in sorted(live)
                    ],
                )
            await self._beat(conn, node, now)
            await _come_and_go(self.db, conn, node, arrived, departed, now, stale)
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
        """Keep this node's rows counting: one row, whatever the node holds."""
        async with self.db.write() as conn:
            await self._beat(conn, node, now)

    async def _beat(self, conn: AsyncConnection, node: str, now: datetime) -> None:
        stmt = self.db.insert(node_beats).values(node=node, alive_at=now)
        await conn.execute(
            stmt.on_conflict_do_update(index_elements=["node"], set_={"alive_at": now})
        )

    async def leave(self, node: str, now: datetime) -> None:
        """A node stopping cleanly closes its users' intervals and takes its rows along."""
        async with self.db.write() as conn:
            await _forget_node(conn, node, now)

    async def begin(self, node: str) -> bool:
        """A node starting: rows left under its name by a process that died (a container
        restarted with the same host name and pid) are closed at that process's last beat,
        so they do not come back to life with the new beat; returns whether there were any."""
        async with self.db.write() as conn:
            at = (
                await conn.execute(select(node_beats.c.alive_at).where(node_beats.c.node == node))
            ).scalar()
            if at is None:
                return False
            await _forget_node(conn, node, aware(at))
            return True

    async def sweep(self, now: datetime) -> int:
        """Close and remove the rows of nodes silent for `FORGET` (a few nodes a call), and
        `online` intervals ended before any escalation can ask (`KEEP`), at most `SWEEP`
        rows; returns how many nodes and intervals went. The common case reads one index."""
        async with self.db.read() as conn:
            dead = list(
                (
                    await conn.execute(
                        select(node_beats.c.node, node_beats.c.alive_at)
                        .where(node_beats.c.alive_at < now - FORGET)
                        .limit(10)
                    )
                ).all()
            )
            probe = select(online.c.until).where(online.c.until < now - KEEP).limit(1)
            old = (await conn.execute(probe)).first()
        if not dead and old is None:
            return 0
        gone = 0
        async with self.db.write() as conn:
            for node, at in dead:
                await _forget_node(conn, node, aware(at))
                gone += 1
            if old is not None:
                o = online.c
                expired = (
                    select(o.node, o.user_id).where(o.until < now - KEEP).limit(SWEEP).subquery()
                )
                result = await conn.execute(
                    delete(online).where(
                        tuple_(o.node, o.user_id).in_(select(expired.c.node, expired.c.user_id))
                    )
                )
                gone += int(result.rowcount or 0)
        return gone

    async def of(
        self, user: str, now: datetime, stale: float
    ) -> tuple[dict[str, int], datetime | None]:
        """A user's live connections by transport (over every live node) and last-seen time."""
        p = presence.c
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(p.transport, func.sum(p.connections))
                .select_from(presence.join(node_beats, _alive(now, stale)))
                .where(p.user_id == user)
                .group_by(p.transport)
            )
            by = {v: int(n) for v, n in rows.all() if n}
            seen = (
                await conn.execute(select(last_seen.c.at).where(last_seen.c.user_id == user))
            ).scalar()
        return by, seen


async def _come_and_go(
    db: Database,
    conn: AsyncConnection,
    node: str,
    arrived: Sequence[str],
    departed: Sequence[str],
    now: datetime,
    slack: float,
) -> None:
    """Open (`arrived`) and close (`departed`) this node's `online` intervals: rows written
    on come and go only. A user back on the node within `slack` of leaving keeps its `since`
    (a page reload is no break), as the heartbeat of the old layout did."""
    o = online.c
    if arrived:
        stmt = db.insert(online)
        back_late = o.until < now - timedelta(seconds=slack)  # NULL (still open): keep
        await conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["node", "user_id"],
                set_={
                    "since": case((back_late, stmt.excluded.since), else_=o.since),
                    "until": None,
                },
            ),
            [{"node": node, "user_id": u, "since": now, "until": None} for u in arrived],
        )
    if departed:
        await conn.execute(
            update(online)
            .where(o.node == node, o.user_id == bindparam("u"))
            .values(until=bindparam("at")),
            [{"u": u, "at": now} for u in departed],
        )


async def _forget_node(conn: AsyncConnection, node: str, end: datetime) -> None:
    """Close the node's open `online` intervals at `end` (now when it leaves cleanly, its
    last beat when it died) and remove its presence and beat rows."""
    o = online.c
    await conn.execute(update(online).where(o.node == node, o.until.is_(None)).values(until=end))
    await conn.execute(delete(presence).where(presence.c.node == node))
    await conn.execute(delete(node_beats).where(node_beats.c.node == node))
