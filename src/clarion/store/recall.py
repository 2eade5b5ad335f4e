"""Recall: take a released notification back from every inbox, count and live tab.

In one transaction: its routes are marked replaced and hidden (`irregular = 2`, counted in
their 1,024-seq buckets, store/holes.py), so pages skip them and unread counts drop them by
the same arithmetic as a collapsed notification; its stream events are deleted, so a resume
from an older cursor never replays it (the hub steps over the gap as over an expired event);
pending pushes, digest items and other pending copies (`PENDING` cancellers) are dropped; and
each stream it went to gets a `state` event, change `removed`: on a personal stream with the
user's new unread count, on a shared stream without one (it differs per follower).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Meta, NotFound, StoredEvent, iso
from clarion.events import removed_event
from clarion.store import holes
from clarion.store.db import Database
from clarion.store.deliveries import record
from clarion.store.inbox import count_unread, load_facts
from clarion.store.schedule import RECALLERS
from clarion.store.schema import digest_items, events, notifications, push_outbox, routes
from clarion.store.schema_control import scheduled
from clarion.store.settings import TypeCache
from clarion.store.streams import allocate
from clarion.store.webhooks import NO_HOOKS, Event, Hooks, queue_in
from clarion.streams import USER_PREFIX


def recalled_events(id: str, users: list[str], shared: list[str]) -> list[Event]:
    """`notification.recalled`: one per named user, one for its shared streams together."""
    out = [Event("notification.recalled", u, {"id": id, "user": u}, id) for u in users]
    if shared:
        out.append(Event("notification.recalled", "", {"id": id, "streams": shared}, id))
    return out


class Recalls:
    db: Database
    types: TypeCache

    async def recall(self, id: str, now: datetime, hooks: Hooks = NO_HOOKS) -> list[StoredEvent]:
        """Take notification `id` back; returns the `removed` events to fan out, and queues
        its `notification.recalled` webhook events (`hooks`) in the same transaction. A
        scheduled one not yet released is simply cancelled. NotFound when there is nothing
        to recall."""
        async with self.db.write() as conn:
            gone = await conn.execute(delete(scheduled).where(scheduled.c.id == id))
            if gone.rowcount:
                await record(
                    self.db, conn, [(id, "*", "in_app", "recalled", now, "before release")]
                )
                return []
            if (
                await conn.execute(select(notifications.c.id).where(notifications.c.id == id))
            ).first() is None:
                raise NotFound(f"notification {id} not found")
            found = (
                await conn.execute(
                    select(routes.c.stream, routes.c.seq, routes.c.type, routes.c.irregular).where(
                        routes.c.notification_id == id, routes.c.replaced.is_(False)
                    )
                )
            ).all()
            await self._drop_pending(conn, id)
            if not found:  # recalled before, or only held for digests so far
                await record(self.db, conn, [(id, "*", "in_app", "recalled", now, None)])
                return []
            at = [(s, q) for s, q, _, _ in found]
            await conn.execute(
                update(routes)
                .where(tuple_(routes.c.stream, routes.c.seq).in_(at))
                .values(replaced=True, collapse_key=None)
            )
            await holes.hide(
                self.db,
                conn,
                [(s, q, t) for s, q, t, irregular in found if irregular != holes.HIDDEN],
            )
            await conn.execute(delete(events).where(tuple_(events.c.stream, events.c.seq).in_(at)))
            streams = sorted({s for s, _ in at})
            heads = await allocate(self.db, conn, {s: 1 for s in streams})
            users = [s[len(USER_PREFIX) :] for s in streams if s.startswith(USER_PREFIX)]
            unread = dict(
                zip(
                    users,
                    await self.db.run(
                        conn,
                        lambda c: count_unread(
                            c,
                            load_facts(c, [(u, ()) for u in users], self.types.get_in(c), now),
                            now,
                        ),
                    ),
                    strict=True,
                )
            )
            out: list[StoredEvent] = []
            stamp = iso(now) or ""
            for stream in streams:
                user = stream[len(USER_PREFIX) :] if stream.startswith(USER_PREFIX) else None
                payload = removed_event(stream, heads[stream], id, stamp, unread.get(user or ""))
                await conn.execute(
                    insert(events).values(
                        stream=stream,
                        seq=heads[stream],
                        kind="state",
                        payload=payload,
                        created_at=now,
                    )
                )
                out.append(StoredEvent(stream, heads[stream], payload, Meta("state")))
            rows = [(id, u, "in_app", "recalled", now, None) for u in users]
            if len(users) < len(streams):
                rows.append((id, "*", "in_app", "recalled", now, None))
            await record(self.db, conn, rows)
            told = recalled_events(id, users, [s for s in streams if not s.startswith(USER_PREFIX)])
            if hooks.wants("notification.recalled"):
                await self.db.run(conn, lambda c: queue_in(c, hooks, told, now))
            return out

    async def _drop_pending(self, conn: AsyncConnection, id: str) -> None:
        await conn.execute(delete(push_outbox).where(push_outbox.c.notification_id == id))
        await conn.execute(delete(digest_items).where(digest_items.c.notification_id == id))
        for drop in RECALLERS:
            await drop(conn, id)
