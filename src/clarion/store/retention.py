"""Retention: old and expired notifications leave the store in small batches.

Expired ones go promptly (`expire`, every few seconds): until then each unread count that
covers one reads it (store/holes.py, `expired`), so that set stays what expired since the
last pass, not everything that carries an expiry."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import bindparam, delete, func, select, tuple_

from clarion.store import holes
from clarion.store.db import Database
from clarion.store.schema import digest_items, events, marks, notifications, routes


class Retention:
    db: Database

    async def expire(self, now: datetime, batch: int = 500) -> int:
        """The expiry sweep, one batch: notifications expired by `now` leave as retention
        removes them (their routes hidden, counted by bucket); returns how many. Found
        through `ix_notifications_expires`, which holds only those not swept yet; the common
        case, nothing expired, takes no write lock."""
        expires_at = notifications.c.expires_at
        async with self.db.read() as conn:
            due = select(expires_at).where(expires_at < now).limit(1)
            if (await conn.execute(due)).first() is None:
                return 0
        return await self.purge(None, now, batch)

    async def purge(self, before: datetime | None, now: datetime, batch: int = 500) -> int:
        """Remove one batch of notifications created before `before` or expired, with their
        events and per-user state; returns how many. Small transactions, so live traffic waits
        for the writer a few milliseconds at most.

        Routes go only as a prefix of their stream, which keeps the ordinal counts exact
        (clarion/inbox.py): an old notification's routes take every route below them along; an
        expired one's routes stay behind, hidden (store/holes.py), until that prefix reaches
        them."""
        n = notifications.c
        async with self.db.write() as conn:
            ids = list(
                (await conn.execute(select(n.id).where(n.expires_at < now).limit(batch))).scalars()
            )
            old: list[str] = []
            if before is not None and len(ids) < batch:
                old = list(
                    (
                        await conn.execute(
                            select(n.id).where(n.created_at < before).limit(batch - len(ids))
                        )
                    ).scalars()
                )
                ids = list(dict.fromkeys([*ids, *old]))
            if ids:  # hidden now (counted by bucket), before their notifications go
                expired = await conn.execute(
                    select(routes.c.stream, routes.c.seq, routes.c.type).where(
                        routes.c.notification_id.in_(ids), routes.c.irregular != holes.HIDDEN
                    )
                )
                await holes.hide(self.db, conn, [tuple(r) for r in expired.all()])
                where = routes.c.notification_id.in_(ids)
                at = select(routes.c.stream, routes.c.seq).where(where)
                await conn.execute(
                    delete(events).where(tuple_(events.c.stream, events.c.seq).in_(at))
                )
                await conn.execute(delete(marks).where(marks.c.notification_id.in_(ids)))
                await conn.execute(
                    delete(digest_items).where(digest_items.c.notification_id.in_(ids))
                )
            if old:
                tops = (
                    await conn.execute(
                        select(routes.c.stream, func.max(routes.c.seq))
                        .where(routes.c.notification_id.in_(old))
                        .group_by(routes.c.stream)
                    )
                ).all()
                if tops:
                    await conn.execute(
                        delete(routes).where(
                            routes.c.stream == bindparam("s"), routes.c.seq <= bindparam("top")
                        ),
                        [{"s": s, "top": top} for s, top in tops],
                    )
                    await holes.forget_below(conn, [(s, top) for s, top in tops])
            if ids:
                await conn.execute(delete(notifications).where(n.id.in_(ids)))
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
