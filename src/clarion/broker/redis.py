"""Redis pub/sub broker: one channel per stream, so a node receives only the streams its own
connections follow. A message is an event packed with its metadata (broker/base.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from clarion.broker.base import WIRE, EventHandler, ResetHandler, pack, split_namespace, unpack
from clarion.domain import StoredEvent

log = logging.getLogger("clarion.broker.redis")
PREFIX = f"clarion:{WIRE}:"


class RedisBroker:
    def __init__(self, url: str) -> None:
        self.url, namespace = split_namespace(url)
        self.prefix = f"clarion:{namespace}:{WIRE}:" if namespace else PREFIX
        self.client: aioredis.Redis = aioredis.Redis.from_url(self.url)
        self.streams: set[str] = set()
        self._pubsub: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._on_event: EventHandler | None = None
        self._on_reset: ResetHandler | None = None

    async def connect(self, on_event: EventHandler, on_reset: ResetHandler) -> None:
        self._on_event, self._on_reset = on_event, on_reset
        await self.client.ping()
        self._reader = asyncio.create_task(self._read_forever())

    async def close(self) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        await self.client.aclose()

    async def publish(self, event: StoredEvent) -> None:
        await self.client.publish(self.prefix + event.stream, pack(event))

    async def subscribe(self, streams: Iterable[str]) -> None:
        new = [s for s in streams if s not in self.streams]
        self.streams.update(new)
        if new and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.subscribe(*(self.prefix + s for s in new))

    async def unsubscribe(self, streams: Iterable[str]) -> None:
        gone = [s for s in streams if s in self.streams]
        self.streams.difference_update(gone)
        if gone and self._pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await self._pubsub.unsubscribe(*(self.prefix + s for s in gone))

    async def _read_forever(self) -> None:
        """Read messages; on any connection loss, resubscribe and tell the hub to refill."""
        backoff = 0.1
        first = True
        while True:
            try:
                self._pubsub = self.client.pubsub(ignore_subscribe_messages=True)
                # A placeholder channel keeps the connection in subscribe mode when idle.
                await self._pubsub.subscribe(
                    self.prefix + "_", *(self.prefix + s for s in self.streams)
                )
                if not first:
                    log.warning("redis broker reconnected; refilling from the store")
                    if self._on_reset:
                        self._on_reset()
                first, backoff = False, 0.1
                while True:
                    msg = await self._pubsub.get_message(timeout=5.0)
                    if msg is None or msg.get("type") != "message":
                        continue
                    stream = msg["channel"].decode()[len(self.prefix) :]
                    event = unpack(stream, msg["data"])
                    if self._on_event is not None and event is not None:
                        self._on_event(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("redis broker connection lost (%s); reconnecting", exc)
                first = False
                with contextlib.suppress(Exception):
                    await self._pubsub.aclose()
                self._pubsub = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
