"""Control and visibility on one node (docs/control.md): scheduled publishes released on
time, cancel, recall, the delivery log's `delivered`, presence and outbound webhooks.

`Control` is the hub's observer (sessions that start and end, notification events it
dispatches) and owns the background loops; each loop has a run-once entry (`release`,
`flush`, `Webhooks.flush`) so tests step them with a fixed clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from clarion.deliveries import Personal, Recorder, reached_users
from clarion.domain import Published, utcnow
from clarion.events import notification_id_of
from clarion.frames import Frame
from clarion.ids import id_at, new_id
from clarion.models import PublishIn
from clarion.planner.schedule import due_time
from clarion.presence import Presence
from clarion.store.deliveries import add_delivered, add_reached, reached_rows
from clarion.streams import ALL, USER_PREFIX, role_stream, topic_stream, user_stream
from clarion.tasks import every
from clarion.webhooks import CHANGED_STREAM, Event, Webhooks

if TYPE_CHECKING:
    from clarion.hub import Session
    from clarion.node import Node

log = logging.getLogger("clarion.control")
RELEASE_BATCH = 100


def via(session: Session) -> str:
    return session.sink.via


_time = time.time


class Control:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.store = node.store
        self.settings = node.settings
        self.webhooks = Webhooks(node.store, node.settings)
        s = node.settings
        self.presence = Presence(node.store.presence, s.presence_stale, s.offline_beat())
        node.pusher.webhooks = self.webhooks  # its `delivery.failed`, queued as it settles
        node.mailer.webhooks = self.webhooks  # `delivery.failed`, `email.bounced`: the same
        self.recorder = Recorder()
        self._personal = self.recorder.personal

    async def start(self) -> None:
        """Hear other nodes' webhook changes (a hint; the cache expires anyway)."""
        self.node.hub.signals[CHANGED_STREAM] = self.webhooks.forget
        await self.node.broker.subscribe([CHANGED_STREAM])

    def loops(self) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(
                every(
                    self.settings.schedule_interval, self.release, "releasing scheduled publishes"
                )
            ),
            asyncio.create_task(
                every(
                    self.settings.presence_interval, self.flush, "writing presence and deliveries"
                )
            ),
            asyncio.create_task(self.webhooks.run()),
        ]

    async def stop(self) -> None:
        """Write the last batch and take this node's presence rows along."""
        with contextlib.suppress(Exception):
            await self.flush()
            await self.presence.leave()

    # -- the hub's observer (hot path: appends only) ------------------------------------------

    def connected(self, session: Session) -> None:
        self.presence.connected(session.user, via(session))

    def disconnected(self, session: Session) -> None:
        self.presence.disconnected(session.user, via(session))

    def dispatched(self, frame: Frame, sessions: Collection[Session]) -> None:
        """A notification event was written to these sessions' connections (hot path: one
        append for a personal stream, a tuple of the sessions for a shared one)."""
        if not frame.stream.startswith(USER_PREFIX):
            if sessions:  # who, not how many tabs: the batch counts each user once
                self.recorder.reached(frame.stream, frame.seq, frame.body, tuple(sessions))
            return
        if len(sessions) == 1:
            for one in sessions:
                if one.closed:
                    return
                via_ = one.sink.via
        else:
            via_ = ",".join(sorted({s.sink.via for s in sessions if not s.closed}))
            if not via_:
                return
        self._personal.append((frame.stream, frame.body, via_, _time()))

    # -- scheduling, cancel, recall -----------------------------------------------------------

    async def schedule(self, body: PublishIn, publisher: str | None) -> Published | None:
        """Accept a publish for later (None: it is due now, publish it at once)."""
        now = utcnow()
        due = due_time(body.send_at, body.delay, now)
        if due is None:
            return None
        id = id_at(int(due.timestamp() * 1000))  # the inbox lists it by when it appears
        stored = body.model_dump(mode="json", exclude={"send_at", "delay"})
        await self.store.schedule(id, stored, due, publisher, body.cancellation_key, now)
        streams = [user_stream(u) for u in body.user_ids]
        streams += [ALL] if body.all else [topic_stream(t) for t in body.topics]
        streams += [] if body.all else [role_stream(r) for r in body.roles]
        return Published(id, [], len(body.user_ids), replayed_streams=streams, scheduled_for=due)

    async def release(self, now: datetime | None = None) -> int:
        """Publish what is due at `now` (default: the clock), run once; returns how many."""
        released = 0
        while not self.node.draining:
            at = now or utcnow()
            results = await self.store.release_due(at, self._build, RELEASE_BATCH)
            await self.node._fanout([e for r in results for e in r.events])
            if results:
                self.node.pusher.wake()
            released += len(results)
            if len(results) < RELEASE_BATCH:
                break
        return released

    def _build(self, body: dict[str, Any], id: str, publisher: str | None, now: datetime) -> Any:
        return self.node.draft(PublishIn.model_validate(body), publisher, id, now)

    async def cancel(self, key: str, users: list[str]) -> int:
        return await self.store.cancel(key, users, utcnow())

    async def recall(self, id: str) -> int:
        """Take a notification back; returns how many streams were told."""
        hooks = await self.webhooks.hooks()
        events = await self.store.recall(id, utcnow(), hooks)
        await self.node._fanout(events)
        if hooks.endpoints:
            self.webhooks.queued()
        return len(events)

    async def _emit(self, events: list[Event]) -> None:
        """Events of live state (no store change to share a transaction with): a failure
        here loses them, never a state change."""
        try:
            await self.webhooks.emit(events)
        except Exception:
            log.exception("queueing %d webhook events failed", len(events))

    # -- the batch: delivered, presence --------------------------------------------------------

    async def flush(self, now: datetime | None = None) -> None:
        """Write `delivered` and presence, queue their webhooks (run once)."""
        now = now or utcnow()
        personal, shared = self.recorder.take()
        if personal or shared:
            await self._delivered(personal, shared, now)
        came, left = await self.presence.flush(now)
        await self._emit(
            [Event("user.connected", u, {"user": u}) for u in came]
            + [Event("user.disconnected", u, {"user": u}) for u in left]
        )

    async def _delivered(
        self,
        personal: list[Personal],
        shared: dict[tuple[str, int], tuple[bytes, list[tuple[Session, ...]]]],
        now: datetime,
    ) -> None:
        delivered: dict[str, dict[str, tuple[datetime, str]]] = {}
        for stream, payload, via_, at in personal:
            nid = notification_id_of(payload)
            if nid:
                users = delivered.setdefault(nid, {})
                user = stream[len(USER_PREFIX) :]
                if user not in users:
                    users[user] = (datetime.fromtimestamp(at, UTC), via_)
        batch = new_id()
        rows = (
            await asyncio.to_thread(lambda: reached_rows(batch, reached_users(shared), now))
            if shared
            else []
        )
        async with self.store.db.write() as conn:
            await add_delivered(conn, batch, delivered, now)
            await add_reached(conn, rows)
        if not delivered or not (await self.webhooks.hooks()).wants("notification.delivered"):
            return
        await self._emit(
            [
                Event(
                    "notification.delivered",
                    user,
                    {"id": nid, "user": user, "transports": via_.split(",")},
                    nid,
                )
                for nid, users in delivered.items()
                for user, (_, via_) in users.items()
            ]
        )
