"""Reads for the operator's console (api/console.py) and the outbox metrics: each one an
index probe or a keyset page, so a page costs the same at 1,000 or 1,000,000 notifications.

Notifications are found by id (primary key), the latest (primary key: ids sort by time), by user
or topic (the stream's routes: primary key `(stream, seq)`, with a type `ix_routes_type`), by
idempotency key (primary key `<publisher key id>:<key>`, one probe per key). A type alone has no
index of its own: it is looked for among the latest `TYPE_WINDOW` notifications, and says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select

from clarion.store.db import Database, aware
from clarion.store.schema import (
    api_keys,
    email_outbox,
    idempotency,
    marks,
    notifications,
    push_outbox,
    push_subscriptions,
    routes,
)
from clarion.store.schema_control import webhook_outbox

TYPE_WINDOW = 20_000  # latest notifications a search by type alone looks through
COUNT_CAP = 100_000  # outbox rows counted at most per scrape (beyond: "at least")
# Every outbox, each with an index on `due_at` (its senders' probe): what `outboxes` reads.
OUTBOXES = {"push": push_outbox, "email": email_outbox, "webhook": webhook_outbox}


@dataclass(slots=True)
class Found:
    """A notification as the console lists it, with where it went."""

    id: str
    type: str
    priority: str
    created_at: datetime
    publisher: str | None
    doc: dict[str, Any]
    streams: list[str]


@dataclass(slots=True)
class OutboxStats:
    due: int  # rows due now (capped at COUNT_CAP)
    oldest_due_seconds: float  # how long the oldest due row has waited; 0 when none
    # every row not yet sent, due or waiting (a retry, quiet hours, a sender's lease; capped)
    pending: int = 0


COLUMNS = (
    notifications.c.id,
    notifications.c.type,
    notifications.c.priority,
    notifications.c.created_at,
    notifications.c.publisher,
    notifications.c.doc,
)


class Lookup:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def latest(self, limit: int, before: str | None, type: str | None) -> list[Found]:
        """Newest first; `before` is the last id of the previous page (ids sort by time)."""
        query = select(*COLUMNS).order_by(notifications.c.id.desc()).limit(limit)
        if type is not None:
            window = select(notifications.c.id).order_by(notifications.c.id.desc())
            if before:
                window = window.where(notifications.c.id < before)
            inner = window.limit(TYPE_WINDOW).subquery()
            query = query.where(notifications.c.id.in_(select(inner.c.id)))
            query = query.where(notifications.c.type == type)
        elif before:
            query = query.where(notifications.c.id < before)
        return await self._found(query)

    async def by_id(self, ids: list[str]) -> list[Found]:
        return await self._found(select(*COLUMNS).where(notifications.c.id.in_(ids)))

    async def by_stream(
        self, stream: str, limit: int, before: int | None, type: str | None
    ) -> tuple[list[Found], int | None]:
        """What a user's or topic's stream carried, newest first; and the next page's seq."""
        query = (
            select(routes.c.seq, routes.c.notification_id)
            .where(routes.c.stream == stream)
            .order_by(routes.c.seq.desc())
            .limit(limit)
        )
        if type is not None:
            query = query.where(routes.c.type == type)
        if before is not None:
            query = query.where(routes.c.seq < before)
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
        found = {f.id: f for f in await self.by_id([r.notification_id for r in rows])}
        items = [found[r.notification_id] for r in rows if r.notification_id in found]
        return items, (rows[-1].seq if len(rows) == limit else None)

    async def by_idempotency_key(self, key: str) -> list[Found]:
        """Keys are scoped per publisher key: one primary-key probe per API key."""
        async with self.db.read() as conn:
            key_ids = (await conn.execute(select(api_keys.c.id))).scalars().all()
            scoped = [f"{k}:{key}" for k in key_ids] + [key]
            ids = (
                (
                    await conn.execute(
                        select(idempotency.c.notification_id).where(idempotency.c.key.in_(scoped))
                    )
                )
                .scalars()
                .all()
            )
        return await self.by_id(list(ids))

    async def _found(self, query: Any) -> list[Found]:
        async with self.db.read() as conn:
            rows = (await conn.execute(query)).all()
            ids = [r.id for r in rows]
            streams: dict[str, list[str]] = {i: [] for i in ids}
            if ids:
                where = routes.c.notification_id.in_(ids)
                for nid, stream in await conn.execute(
                    select(routes.c.notification_id, routes.c.stream).where(where)
                ):
                    streams[nid].append(stream)
        return [
            Found(
                r.id,
                r.type,
                r.priority,
                aware(r.created_at),
                r.publisher,
                orjson.loads(r.doc),
                sorted(streams[r.id]),
            )
            for r in rows
        ]

    async def marks_of(self, notification_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """Per-user states the store keeps for a notification (where users acted)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(marks)
                .where(marks.c.notification_id == notification_id)
                .order_by(marks.c.user_id)
                .limit(limit)
            )
            return [
                {
                    "user": r.user_id,
                    "read_at": r.read_at and aware(r.read_at),
                    "seen_at": r.seen_at and aware(r.seen_at),
                    "archived_at": r.archived_at and aware(r.archived_at),
                }
                for r in rows
            ]

    async def push_subscriptions(self, user: str) -> list[dict[str, Any]]:
        """Without their keys: the console shows where pushes go, never how to forge one."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(
                    push_subscriptions.c.id,
                    push_subscriptions.c.endpoint,
                    push_subscriptions.c.created_at,
                ).where(push_subscriptions.c.user_id == user)
            )
            return [
                {"id": r.id, "endpoint": r.endpoint, "created_at": aware(r.created_at)}
                for r in rows
            ]

    async def outboxes(self, now: datetime) -> dict[str, OutboxStats]:
        """Each outbox's backlog: rows due now and all rows, each counted up to a cap on the
        `due_at` index, and the oldest `due_at` (the index's first entry)."""
        out = {}
        async with self.db.read() as conn:
            for name, table in OUTBOXES.items():
                due = select(table.c.due_at).where(table.c.due_at <= now)
                count = await conn.scalar(
                    select(func.count()).select_from(due.limit(COUNT_CAP).subquery())
                )
                every = select(table.c.due_at)
                pending = await conn.scalar(
                    select(func.count()).select_from(every.limit(COUNT_CAP).subquery())
                )
                oldest = await conn.scalar(select(func.min(table.c.due_at)))
                age = (now - aware(oldest)).total_seconds() if oldest is not None else 0.0
                out[name] = OutboxStats(int(count or 0), max(age, 0.0), int(pending or 0))
        return out
