"""Web Push in the store: subscriptions and the outbox of pending pushes.

A publish's outbox rows are decided by the planner (planner/push.py) over the subscribers
loaded here, and written in the publish transaction (`queue`), so a crash after the 201 loses
no push. Senders claim due rows with a lease (`claim`): on PostgreSQL `FOR UPDATE SKIP LOCKED`
keeps two nodes off the same rows, on SQLite the single writer does. A sender that dies
mid-send leaves its rows to come due again when the lease ends, so a push goes out at least
once; the service worker shows it with the notification's id as `tag`, so a repeat replaces
the first instead of adding a second.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import inbox as inbox_rules
from clarion.domain import UserPreferences, utcnow
from clarion.inbox import Mark, View
from clarion.planner import Subscriber
from clarion.planner.push import PushRow
from clarion.store.db import Database
from clarion.store.deliveries import record
from clarion.store.outbox import any_due, lease_due
from clarion.store.schema import (
    marks,
    notifications,
    preferences,
    push_outbox,
    push_subscriptions,
    user_settings,
    watermarks,
)
from clarion.store.schema import routes as route_rows
from clarion.store.schema_control import deliveries
from clarion.store.webhooks import NO_HOOKS, Event, Hooks, queue_in
from clarion.streams import USER_PREFIX

MAX_SUBSCRIPTIONS = 20  # per user: a 21st browser pushes out the oldest

Key = tuple[str, str]  # (subscription id, notification id): one outbox row


def subscription_id(endpoint: str) -> str:
    return hashlib.sha256(endpoint.encode()).hexdigest()


@dataclass(slots=True)
class Due:
    """A claimed outbox row with what sending it needs."""

    subscription_id: str
    notification_id: str
    user_id: str
    priority: str
    attempts: int  # this send included
    expires_at: datetime | None
    endpoint: str | None  # None: the subscription is gone
    p256dh: str
    auth: str
    doc: bytes | None  # None: the notification is gone (retention)
    settled: bool = False  # read, archived or replaced since: nothing to push any more
    prefs: UserPreferences = field(default_factory=UserPreferences)  # quiet hours, at claim

    @property
    def key(self) -> Key:
        return (self.subscription_id, self.notification_id)


@dataclass(slots=True)
class Outcome:
    """What the sender did with a batch, applied in one transaction."""

    done: list[Key]  # sent, or dropped for good
    later: list[tuple[Key, datetime, bool]]  # (row, when, whether this try counts)
    gone: list[str]  # subscriptions the push service no longer knows (404/410)
    # The delivery log's rows: (notification id, user, "pushed" | "failed" | "recalled", why).
    logged: list[tuple[str, str, str, str | None]] = field(default_factory=list)

    @property
    def failed(self) -> list[Event]:
        """`delivery.failed` for the pushes given up."""
        return [
            Event("delivery.failed", u, {"id": n, "user": u, "channel": "push", "reason": why}, n)
            for n, u, state, why in self.logged
            if state == "failed"
        ]


def _aware(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


class PushStore:
    """Push subscriptions and the outbox, over the shared database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- the publish hook ---------------------------------------------------------------------

    @staticmethod
    async def subscribers(
        conn: AsyncConnection, users: list[str], types: list[str]
    ) -> dict[str, Subscriber]:
        """Of `users` (named recipients of high or critical notifications), those with a
        subscription: their subscriptions, `push` choices for `types` and quiet hours. One
        query when none of them subscribed, none without such users (the planner decides)."""
        if not users:
            return {}
        found: dict[str, Subscriber] = {}
        for sid, user in await conn.execute(
            select(push_subscriptions.c.id, push_subscriptions.c.user_id).where(
                push_subscriptions.c.user_id.in_(users)
            )
        ):
            found.setdefault(user, Subscriber([])).subscriptions.append(sid)
        if not found:
            return {}
        have = sorted(found)
        for u, t, p in await conn.execute(
            select(preferences.c.user_id, preferences.c.type, preferences.c.push).where(
                preferences.c.user_id.in_(have),
                preferences.c.type.in_(types),
                preferences.c.push.is_not(None),
            )
        ):
            found[u].push[t] = p
        for row in await conn.execute(
            select(user_settings).where(user_settings.c.user_id.in_(have))
        ):
            found[row.user_id].prefs = UserPreferences(row.timezone, row.quiet_start, row.quiet_end)
        return found

    @staticmethod
    async def queue(conn: AsyncConnection, rows: list[PushRow]) -> None:
        """Write the planned outbox rows in the publish transaction."""
        if rows:
            await conn.execute(insert(push_outbox), rows)

    # -- the sender ---------------------------------------------------------------------------

    async def claim(self, now: datetime, limit: int, lease: float) -> list[Due]:
        """Take up to `limit` due rows for `lease` seconds (another sender skips them)."""
        if not await any_due(self.db, push_outbox, now):  # most of the time: no writer
            return []
        async with self.db.write() as conn:
            key = [push_outbox.c.subscription_id, push_outbox.c.notification_id]
            mine = await lease_due(self.db, conn, push_outbox, key, now, limit, lease)
            if mine is None:
                return []
            o, s, n, z = push_outbox, push_subscriptions, notifications, user_settings
            mine_stream = literal(USER_PREFIX) + o.c.user_id
            nid = o.c.notification_id
            rt, m, w = route_rows, marks, watermarks
            rows = await conn.execute(
                select(o.c.subscription_id, o.c.notification_id, o.c.user_id, o.c.priority)
                .add_columns(o.c.attempts, o.c.expires_at, s.c.endpoint, s.c.p256dh, s.c.auth)
                .add_columns(n.c.doc, rt.c.seq, rt.c.replaced, m.c.read_at, m.c.unread)
                .add_columns(m.c.archived_at, w.c.read_seq, w.c.archived_seq)
                .add_columns(z.c.timezone, z.c.quiet_start, z.c.quiet_end)
                .select_from(
                    o.outerjoin(s, s.c.id == o.c.subscription_id)
                    .outerjoin(n, n.c.id == o.c.notification_id)
                    .outerjoin(rt, and_(rt.c.stream == mine_stream, rt.c.notification_id == nid))
                    .outerjoin(
                        m,
                        and_(
                            m.c.user_id == o.c.user_id, m.c.notification_id == o.c.notification_id
                        ),
                    )
                    .outerjoin(w, and_(w.c.user_id == o.c.user_id, w.c.stream == mine_stream))
                    .outerjoin(z, z.c.user_id == o.c.user_id)
                )
                .where(mine)
            )
            out = []
            for r in rows.all():
                prefs = UserPreferences(r[17] or "UTC", r[18], r[19])
                settled = _settled(*r[10:17])
                sid, nid, user, priority, attempts, expires, endpoint, p256dh, auth, doc = r[:10]
                due = Due(
                    sid, nid, user, priority, attempts, _aware(expires), endpoint, "", "", doc
                )
                due.p256dh, due.auth, due.settled, due.prefs = p256dh, auth, settled, prefs
                out.append(due)
            return out

    async def recalled(self, ids: list[str]) -> set[str]:
        """Which of these notifications were recalled (the log's `recalled` rows, through
        its primary key): the sender's check right before a push goes out."""
        d = deliveries.c
        async with self.db.read() as conn:
            found = await conn.execute(
                select(d.notification_id)
                .where(d.notification_id.in_(ids), d.state == "recalled")
                .distinct()
            )
            return set(found.scalars())

    async def settle(
        self, outcome: Outcome, hooks: Hooks = NO_HOOKS, now: datetime | None = None
    ) -> None:
        """Apply a batch's results: sent rows go, retries and holds come due later, and
        subscriptions the push service forgot go with their pending rows; in the same
        transaction the delivery log's `push` rows and the `delivery.failed` webhook events."""
        key = tuple_(push_outbox.c.subscription_id, push_outbox.c.notification_id)
        now = now or utcnow()
        async with self.db.write() as conn:
            if outcome.logged:
                await record(
                    self.db,
                    conn,
                    [(n, u, "push", st, now, why) for n, u, st, why in outcome.logged],
                )
            if failed := outcome.failed:
                await self.db.run(conn, lambda c: queue_in(c, hooks, failed, now))
            if outcome.done:
                await conn.execute(delete(push_outbox).where(key.in_(outcome.done)))
            for row, when, counted in outcome.later:
                values: dict[str, Any] = {"due_at": when}
                if not counted:
                    values["attempts"] = push_outbox.c.attempts - 1
                sid, nid = row
                await conn.execute(
                    update(push_outbox)
                    .where(
                        push_outbox.c.subscription_id == sid, push_outbox.c.notification_id == nid
                    )
                    .values(values)
                )
            if outcome.gone:
                await self._forget(conn, outcome.gone)

    async def release(self, user: str, now: datetime) -> int:
        """Pushes held for quiet hours come due now (the user changed them): the sender looks
        at the quiet hours again and holds what is still quiet. Retries keep their times."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(push_outbox)
                .where(
                    push_outbox.c.user_id == user,
                    push_outbox.c.attempts == 0,
                    push_outbox.c.due_at > now,
                )
                .values(due_at=now)
            )
        return int(result.rowcount or 0)

    # -- subscriptions ------------------------------------------------------------------------

    async def subscribe(self, user: str, endpoint: str, p256dh: str, auth: str) -> str:
        """Register (or refresh) a browser's subscription for `user`; returns its id. An
        endpoint another user registered moves to this one, without that user's pending pushes."""
        sid = subscription_id(endpoint)
        row = {
            "user_id": user,
            "endpoint": endpoint,
            "p256dh": p256dh,
            "auth": auth,
            "created_at": utcnow(),
        }
        async with self.db.write() as conn:
            stmt = self.db.insert(push_subscriptions).values(id=sid, **row)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["id"], set_=row))
            await conn.execute(
                delete(push_outbox).where(
                    push_outbox.c.subscription_id == sid, push_outbox.c.user_id != user
                )
            )
            extra = list(
                (
                    await conn.execute(
                        select(push_subscriptions.c.id)
                        .where(push_subscriptions.c.user_id == user)
                        .order_by(push_subscriptions.c.created_at.desc())
                        .offset(MAX_SUBSCRIPTIONS)
                    )
                ).scalars()
            )
            if extra:
                await self._forget(conn, extra)
        return sid

    async def unsubscribe(self, user: str, endpoint: str) -> bool:
        sid = subscription_id(endpoint)
        async with self.db.write() as conn:
            found = (
                await conn.execute(
                    select(push_subscriptions.c.id).where(
                        push_subscriptions.c.id == sid, push_subscriptions.c.user_id == user
                    )
                )
            ).first()
            if found:
                await self._forget(conn, [sid])
        return found is not None

    async def subscriptions(self, user: str) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(push_subscriptions.c.endpoint).where(push_subscriptions.c.user_id == user)
            )
            return list(rows.scalars())

    async def _forget(self, conn: AsyncConnection, ids: list[str]) -> None:
        await conn.execute(delete(push_outbox).where(push_outbox.c.subscription_id.in_(ids)))
        await conn.execute(delete(push_subscriptions).where(push_subscriptions.c.id.in_(ids)))


def _settled(
    seq: int | None,
    replaced: bool | None,
    read_at: datetime | None,
    unread: bool | None,
    archived_at: datetime | None,
    read_seq: int | None,
    archived_seq: int | None,
) -> bool:
    """Whether the user is past this notification: read, archived or collapsed (no push)."""
    if seq is None or replaced:
        return True
    view = View("", 0, seq, read_seq or 0, archived_seq or 0)
    mark = Mark("", read_at, bool(unread), archived_at)
    return not inbox_rules.state(view, seq, mark).unread
