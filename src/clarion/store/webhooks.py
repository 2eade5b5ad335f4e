"""Outbound webhooks in the store: endpoints, the outbox of messages, and recent attempts.

Messages are rows with an ordinal `n`; a sender claims only the oldest row of each (webhook,
user) pair, so one user's events reach an endpoint in the order they happened, while other
users' events are not held up behind a failing one. A claim moves the row's `due_at` a lease
ahead (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so nodes take different rows); a sender that
dies mid-send leaves the row to come due again: at least once, with the same `webhook-id`.

A change to the store that a webhook reports (read, archived, seen, recalled, a push given up)
writes its outbox rows in its own transaction (`queue_in`), so an acknowledged change never
loses its event. The endpoints it writes for are the node's cached list (`Hooks`): with none
configured a change writes no row and runs no extra query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Connection, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import iso
from clarion.ids import new_id
from clarion.store.db import Database, aware
from clarion.store.outbox import any_due
from clarion.store.schema import notifications
from clarion.store.schema_control import webhook_attempts, webhook_outbox, webhooks

KEEP_ATTEMPTS = 200  # per webhook, the newest


@dataclass(slots=True)
class Endpoint:
    name: str
    url: str
    events: list[str]
    types: list[str] | None
    secret: str
    created_at: datetime
    failing_since: datetime | None = None
    disabled_at: datetime | None = None

    def wants(self, event: str, type: str | None) -> bool:
        if self.disabled_at is not None or event not in self.events:
            return False
        return self.types is None or type is None or type in self.types


@dataclass(slots=True)
class Message:
    n: int
    id: str
    webhook: str
    user_id: str
    event: str
    payload: bytes
    attempts: int  # this send included


@dataclass(frozen=True, slots=True)
class Event:
    """Something a webhook may be told: its name, the user it concerns ("" for none: a
    shared-stream notification's), the notification (if any) and the `data` to send."""

    name: str
    user: str
    data: dict[str, Any]
    notification: str | None = None


@dataclass(frozen=True, slots=True)
class Hooks:
    """The enabled endpoints as this node last read them: whom a change's transaction
    queues its events for. Empty: the change writes nothing and reads nothing more."""

    endpoints: tuple[Endpoint, ...] = ()

    def wants(self, name: str) -> bool:
        return any(name in e.events for e in self.endpoints)

    @property
    def by_type(self) -> bool:
        """Whether an endpoint filters by type (only then is a notification's type read)."""
        return any(e.types is not None for e in self.endpoints)


NO_HOOKS = Hooks()

# The inbox changes a webhook reports, by the change's name.
CHANGE_EVENTS = {
    "read": "notification.read",
    "archived": "notification.archived",
    "read_all": "notification.read",
    "archive_all": "notification.archived",
    "seen": "notification.seen",
}


def change_events(user: str, change: str, ids: list[str]) -> list[Event]:
    """The events of one inbox change: one per notification it names, or one `all` event
    for read-all / archive-all."""
    name = CHANGE_EVENTS.get(change)
    if name is None:
        return []
    if change.endswith("_all"):
        return [Event(name, user, {"user": user, "all": True})]
    return [Event(name, user, {"user": user, "id": i}, i) for i in ids]


def outbox_rows(
    events: list[Event], hooks: Hooks, types: dict[str, str], now: datetime
) -> list[dict[str, Any]]:
    """One outbox row per event and endpoint that wants it (its event name and type)."""
    rows = []
    for ev in events:
        type = types.get(ev.notification or "")
        data = {**ev.data, **({"type": type} if type and "type" not in ev.data else {})}
        body = orjson.dumps({"type": ev.name, "timestamp": iso(now), "data": data})
        for w in hooks.endpoints:
            if w.wants(ev.name, type):
                rows.append(
                    {
                        "id": "msg_" + new_id(),
                        "webhook": w.name,
                        "user_id": ev.user,
                        "event": ev.name,
                        "payload": body,
                        "due_at": now,
                        "created_at": now,
                    }
                )
    return rows


def queue_in(conn: Connection, hooks: Hooks, events: list[Event], now: datetime) -> int:
    """Queue the events in the caller's transaction (sync connection: `Database.run` or
    `transact`); returns how many rows. Nothing at all when no endpoint wants them."""
    events = [e for e in events if hooks.wants(e.name)]
    if not events:
        return 0
    ids = sorted({e.notification for e in events if e.notification})
    types: dict[str, str] = {}
    if ids and hooks.by_type:
        found = conn.execute(
            select(notifications.c.id, notifications.c.type).where(notifications.c.id.in_(ids))
        )
        types = {i: t for i, t in found.all()}
    rows = outbox_rows(events, hooks, types, now)
    if rows:
        conn.execute(insert(webhook_outbox), rows)
    return len(rows)


def _endpoint(row: Any) -> Endpoint:
    name, url, evs, types, secret, created, failing, disabled = row
    return Endpoint(
        name,
        url,
        orjson.loads(evs),
        orjson.loads(types) if types is not None else None,
        secret,
        aware(created),
        aware(failing) if failing else None,
        aware(disabled) if disabled else None,
    )


COLUMNS = (
    webhooks.c.name,
    webhooks.c.url,
    webhooks.c.events,
    webhooks.c.types,
    webhooks.c.secret,
    webhooks.c.created_at,
    webhooks.c.failing_since,
    webhooks.c.disabled_at,
)


class WebhookStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def put(
        self,
        name: str,
        url: str,
        events: list[str],
        types: list[str] | None,
        secret: str,
        now: datetime,
    ) -> tuple[Endpoint, bool]:
        """Create or replace an endpoint; a replaced one keeps its secret and is enabled
        again. Returns it and whether it was created."""
        async with self.db.write() as conn:
            old = (await conn.execute(select(*COLUMNS).where(webhooks.c.name == name))).first()
            values = {
                "url": url,
                "events": orjson.dumps(events),
                "types": orjson.dumps(types) if types is not None else None,
                "failing_since": None,
                "disabled_at": None,
            }
            if old is None:
                await conn.execute(
                    insert(webhooks).values(name=name, secret=secret, created_at=now, **values)
                )
            else:
                await conn.execute(update(webhooks).where(webhooks.c.name == name).values(**values))
            row = (await conn.execute(select(*COLUMNS).where(webhooks.c.name == name))).one()
        return _endpoint(row), old is None

    async def get(self, name: str) -> Endpoint | None:
        async with self.db.read() as conn:
            row = (await conn.execute(select(*COLUMNS).where(webhooks.c.name == name))).first()
        return _endpoint(row) if row else None

    async def hooks(self) -> Hooks:
        """The enabled endpoints, for changes to queue their events for."""
        return Hooks(tuple(e for e in await self.all() if e.disabled_at is None))

    async def all(self) -> list[Endpoint]:
        async with self.db.read() as conn:
            return [_endpoint(r) for r in (await conn.execute(select(*COLUMNS))).all()]

    async def delete(self, name: str) -> bool:
        async with self.db.write() as conn:
            await conn.execute(delete(webhook_outbox).where(webhook_outbox.c.webhook == name))
            gone = await conn.execute(delete(webhooks).where(webhooks.c.name == name))
            return bool(gone.rowcount)

    async def queue(self, rows: list[dict[str, Any]]) -> None:
        """Outbox rows: id, webhook, user_id, event, payload, due_at, created_at."""
        if rows:
            async with self.db.write() as conn:
                await conn.execute(insert(webhook_outbox), rows)

    async def emit(self, hooks: Hooks, events: list[Event], now: datetime) -> int:
        """Queue events in a transaction of their own: for those that report no store change
        (live state: delivered, connected, disconnected)."""
        if not any(hooks.wants(e.name) for e in events):
            return 0
        async with self.db.write() as conn:
            return await self.db.run(conn, lambda c: queue_in(c, hooks, events, now))

    async def claim(self, now: datetime, limit: int, lease: float) -> list[Message]:
        """The due head of each (webhook, user) queue, at most `limit`, leased. Most of the
        time nothing is due: a probe on a reader says so without taking the writer."""
        if not await any_due(self.db, webhook_outbox, now):
            return []
        o = webhook_outbox.c
        earlier = webhook_outbox.alias("earlier")
        older = (
            select(earlier.c.n)
            .where(
                earlier.c.webhook == o.webhook,
                earlier.c.user_id == o.user_id,
                earlier.c.n < o.n,
            )
            .exists()
        )
        query = (
            select(o.n, o.id, o.webhook, o.user_id, o.event, o.payload, o.attempts)
            .where(o.due_at <= now, ~older)
            .order_by(o.n)
            .limit(limit)
        )
        if not self.db.sqlite:
            query = query.with_for_update(skip_locked=True, of=webhook_outbox)
        async with self.db.write() as conn:
            rows = (await conn.execute(query)).all()
            if not rows:
                return []
            await conn.execute(
                update(webhook_outbox)
                .where(o.n.in_([r[0] for r in rows]))
                .values(due_at=now + timedelta(seconds=lease), attempts=o.attempts + 1)
            )
        return [Message(n, i, w, u, e, bytes(p), a + 1) for n, i, w, u, e, p, a in rows]

    async def settle(
        self,
        sent: list[Message],
        failed: list[tuple[Message, datetime]],
        attempts: list[dict[str, Any]],
        now: datetime,
        disable_after: float,
    ) -> list[str]:
        """Record a batch's outcomes in one transaction: sent rows go, failed ones wait until
        their retry time; an endpoint that has failed for `disable_after` seconds with no
        success is disabled. Returns the names disabled now."""
        disabled: list[str] = []
        async with self.db.write() as conn:
            if sent:
                await conn.execute(
                    delete(webhook_outbox).where(webhook_outbox.c.n.in_([m.n for m in sent]))
                )
                await conn.execute(
                    update(webhooks)
                    .where(webhooks.c.name.in_({m.webhook for m in sent}))
                    .values(failing_since=None)
                )
            for m, when in failed:
                await conn.execute(
                    update(webhook_outbox).where(webhook_outbox.c.n == m.n).values(due_at=when)
                )
            if failed:
                names = sorted({m.webhook for m, _ in failed} - {m.webhook for m in sent})
                await conn.execute(
                    update(webhooks)
                    .where(webhooks.c.name.in_(names), webhooks.c.failing_since.is_(None))
                    .values(failing_since=now)
                )
                limit = now - timedelta(seconds=disable_after)
                disabled = list(
                    (
                        await conn.execute(
                            update(webhooks)
                            .where(
                                webhooks.c.name.in_(names),
                                webhooks.c.failing_since <= limit,
                                webhooks.c.disabled_at.is_(None),
                            )
                            .values(disabled_at=now)
                            .returning(webhooks.c.name)
                        )
                    ).scalars()
                )
            if attempts:
                await conn.execute(insert(webhook_attempts), attempts)
                await _trim(conn, {a["webhook"] for a in attempts})
        return disabled

    async def attempts(self, name: str, limit: int) -> list[dict[str, Any]]:
        a = webhook_attempts.c
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(a.message_id, a.event, a.at, a.attempt, a.status, a.error)
                .where(a.webhook == name)
                .order_by(a.n.desc())
                .limit(limit)
            )
            return [
                {
                    "message_id": m,
                    "event": e,
                    "at": aware(at),
                    "attempt": n,
                    "status": s,
                    "error": err,
                }
                for m, e, at, n, s, err in rows.all()
            ]

    async def pending(self, name: str) -> int:
        async with self.db.read() as conn:
            found = await conn.execute(select(func.count()).where(webhook_outbox.c.webhook == name))
            return int(found.scalar() or 0)


async def _trim(conn: AsyncConnection, names: set[str]) -> None:
    """Keep the newest KEEP_ATTEMPTS attempts per webhook."""
    a = webhook_attempts.c
    for name in sorted(names):
        cut = (
            await conn.execute(
                select(a.n)
                .where(a.webhook == name)
                .order_by(a.n.desc())
                .offset(KEEP_ATTEMPTS)
                .limit(1)
            )
        ).scalar()
        if cut is not None:
            await conn.execute(delete(webhook_attempts).where(a.webhook == name, a.n <= cut))
