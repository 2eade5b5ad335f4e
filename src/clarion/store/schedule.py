"""Scheduled publishes and cancellation in the store.

A scheduled publish is a row holding its request body; it has no seq and no route until it
is released. Release deletes the due rows and publishes them through the normal publish path
(load -> plan -> write) in the same transaction, so the seqs are allocated then, and a release
either commits whole or not at all: a node killed mid-release leaves the rows for the next
sweep (on PostgreSQL the DELETE's row locks keep two nodes from releasing one row twice; on
SQLite there is one writer). Cancel removes what is not released yet: scheduled rows, held
digest items, and whatever the registered `PENDING` cancellers hold (escalations, issue #14).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import orjson
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Draft, Published
from clarion.planner.schedule import without_users
from clarion.store.db import Database
from clarion.store.deliveries import record
from clarion.store.outbox import any_due
from clarion.store.schema import digest_items
from clarion.store.schema_control import cancellation_keys, scheduled

# Builds the draft of a released publish: (request body, notification id, publisher, now).
Build = Callable[[dict[str, Any], str, str | None, datetime], Draft]
# A canceller of other pending work with a cancellation key, run in the cancel's transaction:
# (connection, key, users or [] for all) -> how many it cancelled. Email escalations (#14)
# register theirs here.
Canceller = Callable[[AsyncConnection, str, list[str]], Awaitable[int]]
PENDING: list[Canceller] = []
# Drops another channel's pending copies of a recalled notification: (connection, id).
Recaller = Callable[[AsyncConnection, str], Awaitable[None]]
RECALLERS: list[Recaller] = []


class Scheduling:
    db: Database

    if TYPE_CHECKING:  # store/publish.py's, in the composed store

        async def _publish(self, conn: AsyncConnection, drafts: list[Draft]) -> list[Published]: ...

    async def schedule(
        self,
        id: str,
        body: dict[str, Any],
        due_at: datetime,
        publisher: str | None,
        cancellation_key: str | None,
        now: datetime,
    ) -> None:
        """Accept a publish for later: durable when this returns (the 201 follows)."""
        async with self.db.write() as conn:
            await conn.execute(
                insert(scheduled).values(
                    id=id,
                    due_at=due_at,
                    body=orjson.dumps(body),
                    publisher=publisher,
                    cancellation_key=cancellation_key,
                    created_at=now,
                )
            )
            await record(self.db, conn, [(id, "*", "in_app", "scheduled", now, due_at.isoformat())])

    async def release_due(self, now: datetime, build: Build, limit: int = 100) -> list[Published]:
        """Publish the scheduled rows due at `now` (at most `limit`), exactly once."""
        if not await any_due(self.db, scheduled, now):  # the common case: no write lock
            return []
        async with self.db.write() as conn:
            ids = (
                await conn.execute(
                    select(scheduled.c.id)
                    .where(scheduled.c.due_at <= now)
                    .order_by(scheduled.c.due_at, scheduled.c.id)
                    .limit(limit)
                )
            ).scalars()
            gone = await conn.execute(
                delete(scheduled)
                .where(scheduled.c.id.in_(list(ids)))
                .returning(
                    scheduled.c.id, scheduled.c.body, scheduled.c.publisher, scheduled.c.due_at
                )
            )
            taken = list(gone.all())
            if not taken:
                return []
            taken.sort(key=lambda r: (r[3], r[0]))  # in due order: seqs follow it
            drafts = [build(orjson.loads(body), id, pub, now) for id, body, pub, _ in taken]
            return await self._publish(conn, drafts)

    async def scheduled_for(self, id: str) -> datetime | None:
        async with self.db.read() as conn:
            found = await conn.execute(select(scheduled.c.due_at).where(scheduled.c.id == id))
            return found.scalar()

    async def cancel(self, key: str, users: list[str], now: datetime) -> int:
        """Cancel what carries `key` and is not released yet (for `users` only, if given);
        returns how many scheduled publishes (or named recipients of them), held digest items
        and other pending items it cancelled."""
        cancelled = 0
        log: list[tuple[str, str, str, str, datetime, str | None]] = []
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    select(scheduled.c.id, scheduled.c.body).where(
                        scheduled.c.cancellation_key == key
                    )
                )
            ).all()
            for id, raw in rows:
                left, n = without_users(orjson.loads(raw), users)
                cancelled += n
                if left is None:
                    await conn.execute(delete(scheduled).where(scheduled.c.id == id))
                    log.append((id, "*", "in_app", "cancelled", now, None))
                elif n:
                    await conn.execute(
                        update(scheduled)
                        .where(scheduled.c.id == id)
                        .values(body=orjson.dumps(left))
                    )
                named = set(orjson.loads(raw).get("users") or [])
                for user in sorted(named.intersection(users)):
                    log.append((id, user, "in_app", "cancelled", now, None))
            held = digest_items.c.notification_id.in_(
                select(cancellation_keys.c.notification_id).where(cancellation_keys.c.key == key)
            )
            query = delete(digest_items).where(held)
            if users:
                query = query.where(digest_items.c.user_id.in_(users))
            gone = (
                await conn.execute(
                    query.returning(digest_items.c.notification_id, digest_items.c.user_id)
                )
            ).all()
            cancelled += len(gone)
            log += [(nid, user, "in_app", "cancelled", now, "digest") for nid, user in gone]
            for canceller in PENDING:
                cancelled += await canceller(conn, key, users)
            await record(self.db, conn, log)
        return cancelled
