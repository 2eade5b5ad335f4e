"""The delivery core of one Clarion process: store, broker, hub and auth, wired together.

Every edge (HTTP API, transports, CLI) goes through here, so there is one publish path:
validate, commit to the store, then hand the committed events to the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson

from clarion.auth import Keys, Principal, Tokens
from clarion.batching import Batcher
from clarion.broker import Broker, open_broker
from clarion.config import Settings
from clarion.hub import Hub
from clarion.ids import new_id
from clarion.models import PublishIn, iso, utcnow
from clarion.ratelimit import RateLimits
from clarion.store import SQLStore, StoredEvent, open_store
from clarion.store.base import Change, Draft, Published, StateChanged
from clarion.streams import ALL, user_stream

log = logging.getLogger("clarion.node")


def notification_doc(id: str, body: PublishIn, created_at: Any, expires_at: Any) -> bytes:
    """The notification as clients see it, encoded once and stored as is."""
    return orjson.dumps(
        {
            "id": id,
            "type": body.type,
            "priority": body.priority,
            "title": body.title,
            "body": body.body,
            "icon": body.icon,
            "actor": body.actor.model_dump() if body.actor else None,
            "url": body.url,
            "actions": [a.model_dump() for a in body.actions],
            "data": body.data,
            "created_at": iso(created_at),
            "expires_at": iso(expires_at),
            "collapse_key": body.collapse_key,
        }
    )


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store: SQLStore = open_store(settings.database_url)
        self.broker: Broker = open_broker(settings.broker_url)
        self.hub = Hub(self.store, self.broker)
        self.tokens = Tokens(settings)
        self.keys = Keys(self.store)
        self.limits = RateLimits(settings)
        self.draining = False
        self.admission = asyncio.Semaphore(settings.max_handshakes)
        self.published = 0
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._followed: set[tuple[str, str]] = set()
        self._follows: Batcher[tuple[str, str], None] = Batcher(self._follow_batch)
        # A transaction holds at most ~5,000 recipients' rows, however many publishes wait.
        self._publishes: Batcher[Draft, Published] = Batcher(
            self._publish_batch, max_weight=5000, weight=lambda d: len(d.users) + len(d.shared)
        )

    async def start(self) -> None:
        await self.store.connect()
        await self.hub.start()

    def drain(self) -> None:
        """Stop taking live connections and close the open ones with 1012 (reconnect
        elsewhere, with your cursor). Publishes in flight still finish."""
        if self.draining:
            return
        self.draining = True
        for session in list(self.hub.sessions):
            session.sink.close(1012, "server restarting")

    async def stop(self) -> None:
        """Graceful: stop taking publishes, let in-flight ones finish, tell clients to go."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout=10)
        await self.hub.stop()
        await self.store.close()

    def streams_of(self, principal: Principal) -> list[str]:
        """The streams a connection of this user follows."""
        return [user_stream(principal.user), ALL]

    async def seen(self, principal: Principal) -> None:
        """Record the user's shared streams the first time we see it (its inbox starts there).
        Batched: a reconnect storm of N new users costs a few transactions, not N."""
        pairs = [
            (principal.user, s)
            for s in self.streams_of(principal)
            if s != user_stream(principal.user)
        ]
        missing = [p for p in pairs if p not in self._followed]
        if not missing:
            return
        for pair in missing:
            await self._follows.submit(pair)
        if len(self._followed) > 200_000:
            self._followed.clear()
        self._followed.update(missing)

    async def _follow_batch(self, pairs: list[tuple[str, str]]) -> list[None]:
        await self.store.ensure_follows(pairs)
        return [None] * len(pairs)

    async def publish(self, body: PublishIn, publisher: str | None) -> Published:
        now = utcnow()
        expires_at = body.expiry(now)
        id = new_id()
        draft = Draft(
            id=id,
            type=body.type,
            priority=body.priority,
            doc=notification_doc(id, body, now, expires_at),
            created_at=now,
            expires_at=expires_at,
            collapse_key=body.collapse_key,
            users=body.users,
            shared=[ALL] if body.all else [],
            idempotency_key=body.idempotency_key,
            publisher=publisher,
        )
        async with self._tracked():
            return await self._publishes.submit(draft)

    async def _publish_batch(self, drafts: list[Draft]) -> list[Published]:
        """One transaction for every publish waiting; their events then leave together."""
        results = await self.store.publish(drafts)
        self.published += sum(not r.duplicate for r in results)
        await self._fanout([e for r in results for e in r.events])
        return results

    async def change(self, user: str, change: Change, id: str | None = None) -> StateChanged:
        async with self._tracked():
            result = await self.store.change_state(user, change, id)
            if result.event is not None:
                await self._fanout([result.event])
        return result

    async def _fanout(self, events: list[StoredEvent]) -> None:
        """After the commit. A broker failure loses nothing: nodes refill from the store."""
        for ev in events:
            try:
                await self.broker.publish(ev.stream, ev.seq, ev.payload)
            except Exception:
                log.warning("broker publish failed for %s/%d; nodes will refill", ev.stream, ev.seq)

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
