"""The delivery core of one Clarion process: store, broker, hub and auth, wired together.

Every edge (HTTP API, transports, CLI) goes through here, so there is one publish path:
validate, commit to the store, then hand the committed events to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

import orjson

from clarion import events, tracing
from clarion.auth import Keys, Principal, Tokens
from clarion.backlog import Backlogs
from clarion.batching import Batcher
from clarion.broker import Broker, open_broker
from clarion.config import Settings
from clarion.control import Control
from clarion.domain import (
    Change,
    ClarionError,
    Draft,
    Escalation,
    Profile,
    Published,
    StateChanged,
    StoredEvent,
    iso,
    utcnow,
)
from clarion.email import Mailer
from clarion.hub import Hub, Session
from clarion.ids import new_id
from clarion.ingest import Consumers
from clarion.models import ProfileIn, PublishIn
from clarion.planner import PUSHED
from clarion.push import Pusher
from clarion.ratelimit import RateLimits
from clarion.stats import Stats
from clarion.store import SQLStore, open_store
from clarion.streams import ALL, ROLE_PREFIX, role_stream, topic_stream, user_stream
from clarion.tasks import every
from clarion.timings import Timings
from clarion.transports.http import Slots

log = logging.getLogger("clarion.node")
SYNC_SECONDS = 60.0  # how long a user's follows count as in line with a token shape
# Loop turns a smaller batch of publishes waits under load for callers already received
# (batching.py): with 16 requests in flight, 7.4-9.6 publishes a commit against 4.1-6.0 with none
# (three runs each on a busy machine, docs/benchmarks.md).
GATHER_TURNS = 6
BROKER_TIMEOUT = 2.0  # seconds a broker publish may take before nodes are left to refill


def notification_doc(id: str, body: PublishIn, created_at: Any, expires_at: Any) -> bytes:
    """The notification as clients see it, encoded once and stored as is."""
    return events.notification_doc(
        id,
        iso(created_at),
        type=body.type,
        priority=body.priority,
        title=body.title,
        body=body.body,
        icon=body.icon,
        actor=body.actor.model_dump() if body.actor else None,
        url=body.url,
        actions=[a.model_dump() for a in body.actions],
        data=body.data,
        expires_at=iso(expires_at),
        collapse_key=body.collapse_key,
    )


def profile_of(user: str, body: ProfileIn) -> Profile:
    return Profile(user, body.email, body.name, body.locale, body.timezone, body.data)


def scoped_key(publisher: str | None, key: str | None) -> str | None:
    """Idempotency keys are each publisher's own: two API keys may use the same one."""
    return f"{publisher}:{key}" if key and publisher else key


def fingerprint(body: PublishIn) -> str:
    """The request as sent (less its key), so a reused key with another body is told apart."""
    fields = body.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()


class IdempotencyConflict(ClarionError):
    def __init__(self) -> None:
        super().__init__(
            409,
            "idempotency_conflict",
            "this idempotency key was used with another body; use a new key for a new publish",
            "idempotency_key",
        )


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: SQLStore = open_store(settings.database_url)
        self.broker: Broker = open_broker(settings.broker_url)
        self.hub = Hub(self.store, self.broker, max_per_user=settings.max_connections_per_user)
        self.pusher = Pusher(self.store, settings)
        self.mailer = Mailer(self.store, settings)
        self.control = Control(self)  # schedule, recall, delivery log, presence, webhooks
        self.hub.observer = self.control
        if settings.delivery_log:  # `delivered`, recorded off the fan-out path in batches
            self.hub.on_dispatch = self.control.dispatched
        self.tokens = Tokens(settings)
        self.keys = Keys(self.store)
        self.limits = RateLimits(settings)
        self.draining = False
        self.admission = asyncio.Semaphore(settings.max_handshakes)
        self.poll_slots = Slots(settings.max_handshakes)  # long-polls in the app at once
        self.published = 0
        self.broker_failures = 0  # events the broker did not take (nodes refill from the store)
        self.publish_times = Timings()  # request to acknowledgement (metrics.py)
        self.backlogs = Backlogs(self.store.lookup)  # outbox backlogs, read every few seconds
        self.stats = Stats(self)  # the console's Live page across nodes
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._synced: dict[str, tuple[tuple[tuple[str, ...], tuple[str, ...]], float]] = {}
        self._syncs: Batcher[tuple[str, list[str], list[str]], None] = Batcher(self._sync_batch)
        self._loops: list[asyncio.Task[None]] = []
        # A transaction holds at most ~5,000 recipients' rows, however many publishes wait.
        self._publishes: Batcher[Draft, Published] = Batcher(
            self._publish_batch,
            max_weight=5000,
            weight=lambda d: len(d.users) + len(d.shared),
            gather_turns=GATHER_TURNS,
        )
        # The app's outbox table and queues: the same publish path, keyed per message.
        self.consumers = Consumers(settings.consume, self.publish, self.store.ping)

    async def start(self) -> None:
        await self.store.connect()
        await self.tokens.load(self.store)
        await self.hub.start()
        await self.control.start()
        await self.pusher.start()
        await self.mailer.start()
        self._loops = [
            asyncio.create_task(self.mailer.run()),
            asyncio.create_task(
                every(self.settings.online_interval, self.beat, "presence housekeeping")
            ),
            asyncio.create_task(
                every(self.settings.digest_interval, self.flush_digests, "the digest flush")
            ),
            asyncio.create_task(every(self.settings.retention_interval, self.purge, "retention")),
            asyncio.create_task(every(self.settings.expiry_interval, self.expire, "expiry sweep")),
            asyncio.create_task(self.pusher.run()),
            *self.control.loops(),
        ]
        if self.settings.console:  # the Live page reads every node's snapshot
            self._loops.append(
                asyncio.create_task(
                    every(self.settings.stats_interval, self.stats.publish, "the stats snapshot")
                )
            )
        self.consumers.start()

    async def flush_digests(self, now: datetime | None = None) -> int:
        """Send the digests due at `now` (default: the clock), run once; returns how many."""
        sent = 0
        while not self.draining:
            results = await self.store.flush_digests(now or utcnow())
            await self._fanout([e for r in results for e in r.events])
            sent += len(results)
            if len(results) < 100:
                break
        return sent

    async def beat(self, now: datetime | None = None) -> None:
        """Presence housekeeping (run once): rows of nodes long dead go. Nothing here grows
        with the connections held: the node's heartbeat is one row written with each
        presence batch, and users' rows are written when they come and go (control.py)."""
        await self.store.beat(now or utcnow())

    async def forget(self, user: str) -> dict[str, int]:
        """Erase a user (right to erasure); its live connections are closed first."""
        for session in [s for s in self.hub.sessions if s.user == user]:
            session.sink.close(4003, "user erased")
        return await self.store.forget(user)

    async def purge(self) -> int:
        """Retention: remove old and expired notifications in small batches, yielding to live
        traffic between them."""
        days = self.settings.retention_days
        before = utcnow() - timedelta(days=days) if days > 0 else None
        removed = 0
        while not self.draining:
            n = await self.store.purge(before, utcnow())
            removed += n
            if n == 0:
                break
            await asyncio.sleep(0.05)
        return removed

    async def expire(self, now: datetime | None = None) -> int:
        """The expiry sweep (run once): notifications expired by `now` (default: the clock)
        leave in small batches, their routes hidden, so an unread count never reads more than
        what expired since the last sweep (store/holes.py)."""
        removed = 0
        while not self.draining:
            n = await self.store.expire(now or utcnow())
            removed += n
            if n == 0:
                break
            await asyncio.sleep(0.05)
        return removed

    def drain(self) -> None:
        """Stop taking live connections and close the open ones with 1012 (reconnect
        elsewhere, with your cursor). Publishes in flight still finish."""
        if self.draining:
            return
        self.draining = True
        self.hub.close_sessions(1012, "server restarting")

    async def stop(self) -> None:
        """Graceful: stop taking publishes, let in-flight ones finish, tell clients to go."""
        self.draining = True
        await self.consumers.stop()  # fetch no more; the batch in hand commits and is acked
        for task in self._loops:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=10)
        await self.hub.stop()
        await self.control.stop()
        if self.settings.console:
            with contextlib.suppress(Exception):
                await self.stats.leave()
        await self.store.close()

    def streams_of(self, principal: Principal) -> list[str]:
        """The streams a connection of this user follows besides its topics (those the store
        knows): its own, `all`, and the roles its token carries."""
        return [user_stream(principal.user), *self.shared_of(principal)]

    def shared_of(self, principal: Principal) -> list[str]:
        return [ALL, *(role_stream(r) for r in principal.roles)]

    async def seen(self, principal: Principal) -> None:
        """Bring the user's follows in line with its token (new roles start now, dropped roles
        and topics its claim no longer covers end). Done when this process sees a token of
        another shape for the user, or a minute after the last time (another node may have
        seen other tokens in between). Batched: a reconnect storm of N users costs a few
        transactions, not N."""
        shape = (principal.roles, principal.topics)
        now = time.monotonic()
        last = self._synced.get(principal.user)
        if last is not None and last[0] == shape and last[1] > now:
            return
        await self._syncs.submit(
            (principal.user, self.shared_of(principal), list(principal.topics))
        )
        if len(self._synced) > 200_000:
            self._synced.clear()
        self._synced[principal.user] = (shape, now + SYNC_SECONDS)

    async def refreshed(self, session: Session, principal: Principal) -> None:
        """A live connection refreshed its token: from now on it follows what the new token
        gives. A role the token no longer carries stops at once (its live events included);
        a new role starts at its current head; topics follow through `seen` (unfollow events)."""
        await self.seen(principal)
        old = {s for s in session.streams if s.startswith(ROLE_PREFIX)}
        new = {role_stream(r) for r in principal.roles}
        for name in sorted(old - new):
            await self.hub.unfollow(session, name, session.position.get(name, 0))
        if gained := sorted(new - old):
            heads = await self.store.heads(gained)
            for name in gained:
                await self.hub.follow(session, name, heads[name])

    async def _sync_batch(self, items: list[tuple[str, list[str], list[str]]]) -> list[None]:
        await self._fanout(await self.store.sync_audiences(items))
        return [None] * len(items)

    async def follow(self, principal: Principal, topic: str) -> None:
        """The user follows a topic: allowed by its token's `topics` claim or a publisher's
        grant. Its live sessions start receiving the topic at once (a `follow` event)."""
        async with self._tracked():
            evs = await self.store.follow(
                [principal.user],
                topic_stream(topic),
                grant=False,
                allowed=principal.may_follow(topic),
            )
            await self._fanout(evs)

    async def unfollow(self, user: str, topic: str) -> None:
        async with self._tracked():
            await self._fanout(await self.store.unfollow([user], topic_stream(topic), revoke=False))

    async def subscribe(self, users: list[str], topic: str, subscribed: bool) -> None:
        """Publisher-managed subscriptions: subscribe (and allow) or unsubscribe (and revoke)."""
        async with self._tracked():
            name = topic_stream(topic)
            if subscribed:
                evs = await self.store.follow(users, name, grant=True)
            else:
                evs = await self.store.unfollow(users, name, revoke=True)
            await self._fanout(evs)

    async def set_preferences(
        self,
        user: str,
        types: dict[str, tuple[bool | None, bool | None]],
        zone: tuple[str | None, str | None, str | None] | None,
        email: dict[str, bool | None] | None = None,
    ) -> None:
        async with self._tracked():
            await self._fanout([await self.store.put_preferences(user, types, zone, email)])
            if zone is not None:  # pushes held for the old quiet hours are looked at again
                await self.pusher.release(user)

    async def publish(self, body: PublishIn, publisher: str | None) -> Published:
        if body.profiles:  # inline profiles: upserted before the notification is stored
            await self.store.put_profiles([profile_of(p.id, p) for p in body.profiles])
        if body.send_at is not None or body.delay:
            async with self._tracked():
                scheduled = await self.control.schedule(body, publisher)
            if scheduled is not None:
                return scheduled
        started = time.monotonic()
        with tracing.span("clarion.publish", type=body.type, priority=body.priority) as span:
            with tracing.span("clarion.publish.validate"):
                draft = self.draft(body, publisher, new_id(), utcnow())
            span.set_attribute("clarion.notification_id", draft.id)
            async with self._tracked():
                result = await self._publishes.submit(draft)
        if result.conflict:
            raise IdempotencyConflict()
        self.publish_times.observe("publish", time.monotonic() - started)
        return result

    def draft(self, body: PublishIn, publisher: str | None, id: str, now: datetime) -> Draft:
        """The draft of a publish request: now, or when a scheduled one is released."""
        expires_at = body.expiry(now)
        return Draft(
            id=id,
            type=body.type,
            priority=body.priority,
            doc=notification_doc(id, body, now, expires_at),
            created_at=now,
            expires_at=expires_at,
            collapse_key=body.collapse_key,
            users=body.user_ids,
            escalate=None
            if body.escalate is None
            else tuple(
                Escalation(e.channel, e.after, e.unless, e.when == "offline") for e in body.escalate
            ),
            shared=[ALL]
            if body.all
            else list(
                dict.fromkeys(
                    [*(topic_stream(t) for t in body.topics), *(role_stream(r) for r in body.roles)]
                )
            ),
            idempotency_key=scoped_key(publisher, body.idempotency_key),
            fingerprint=fingerprint(body) if body.idempotency_key else None,
            publisher=publisher,
            cancellation_key=body.cancellation_key,
        )

    async def _publish_batch(self, drafts: list[Draft]) -> list[Published]:
        """One transaction for every publish waiting; their events then leave together."""
        with tracing.span("clarion.publish.commit", **{"clarion.batch": len(drafts)}):
            results = await self.store.publish(drafts)
        self.published += sum(not r.duplicate for r in results)
        events = [e for r in results for e in r.events]
        with tracing.span("clarion.publish.broker", **{"clarion.events": len(events)}):
            await self._fanout(events)
        if any(d.priority in PUSHED and d.users for d in drafts):
            self.pusher.wake()  # this node sends its own publishes' pushes at once
        if any(d.escalate and min(e.after for e in d.escalate) == 0 for d in drafts):
            self.mailer.wake()  # "email it now" goes out at once
        return results

    async def change(self, user: str, change: Change, id: str | None = None) -> StateChanged:
        """A read/unread/archive change; its webhook events are queued in its transaction."""
        async with self._tracked():
            hooks = await self.control.webhooks.hooks()
            result = await self.store.change_state(user, change, id, hooks)
            if result.event is not None:
                await self._fanout([result.event])
            if hooks.endpoints:
                self.control.webhooks.queued()
        return result

    async def seen_ids(self, user: str, ids: list[str]) -> StateChanged:
        """Notifications shown in an open inbox (one `state` event `seen` for all of them)."""
        async with self._tracked():
            hooks = await self.control.webhooks.hooks()
            result = await self.store.mark_seen(user, ids, hooks)
            if result.event is not None:
                await self._fanout([result.event])
            if hooks.endpoints:
                self.control.webhooks.queued()
        return result

    async def _fanout(self, events: list[StoredEvent]) -> None:
        """After the commit. A broker failure loses nothing: nodes refill from the store."""
        # A broker that hangs must not hold back the 201s either. `asyncio.timeout` wraps no
        # task around the publishes: the in-process broker dispatches in this very turn of the
        # loop, so the frames of one group commit are written to each socket together.
        try:
            async with asyncio.timeout(BROKER_TIMEOUT):
                for ev in events:
                    try:
                        await self.broker.publish(ev)
                    except Exception:
                        self.broker_failures += 1
                        log.warning(
                            "broker publish failed for %s/%d; nodes refill", ev.stream, ev.seq
                        )
        except TimeoutError:
            self.broker_failures += 1
            log.warning("the broker took more than %.0f s; nodes will refill", BROKER_TIMEOUT)

    @contextlib.asynccontextmanager
    async def _tracked(self) -> Any:
        self._inflight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self._inflight -= 1
            if self._inflight == 0:
                self._idle.set()
