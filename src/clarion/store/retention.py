"""Retention: old and expired notifications leave the store in small batches."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, or_, select, tuple_

from clarion.store.db import Database
from clarion.store.schema import digest_items, events, inbox, notifications
from clarion.store.schema import notification_streams as NS


class Retention:
    db: Database

    async def purge(self, before: datetime | None, now: datetime, batch: int = 500) -> int:
        """Remove one batch of notifications created before `before` or expired, with their
        events, routes and per-user state; returns how many. Small transactions, so live
        traffic waits for the writer a few milliseconds at most."""
        old = notifications.c.expires_at < now
        if before is not None:
            old = or_(old, notifications.c.created_at < before)
        async with self.db.write() as conn:
            ids = list(
                (await conn.execute(select(notifications.c.id).where(old).limit(batch))).scalars()
            )
            if ids:
                await conn.execute(delete(events).where(events.c.notification_id.in_(ids)))
                await conn.execute(delete(NS).where(NS.c.notification_id.in_(ids)))
                await conn.execute(delete(inbox).where(inbox.c.notification_id.in_(ids)))
                await conn.execute(
                    delete(digest_items).where(digest_items.c.notification_id.in_(ids))
                )
                await conn.execute(delete(notifications).where(notifications.c.id.in_(ids)))
            if before is not None and len(ids) < batch:
                stale = (
                    await conn.execute(
                        select(events.c.stream, events.c.seq)
                        .where(events.c.notification_id.is_(None), events.c.created_at < before)
                        .limit(batch - len(ids))
                    )
                ).all()
                if stale:
                    await conn.execute(
                        delete(events).where(
                            tuple_(events.c.stream, events.c.seq).in_([tuple(r) for r in stale])
                        )
                    )
                    return len(ids) + len(stale)
        return len(ids)
