"""NATS core pub/sub broker: one subject per stream (the name base64url-encoded, since subjects
cannot hold every character a user id may), so a node receives only what it follows."""

from __future__ import annotations

import base64
import contextlib
import logging
from collections.abc import Iterable
from typing import Any

import nats

from clarion.broker.base import WIRE, EventHandler, ResetHandler, pack, split_namespace, unpack
from clarion.domain import StoredEvent

log = logging.getLogger("clarion.broker.nats")
PREFIX = f"clarion.{WIRE}.s."


def subject(stream: str, prefix: str = PREFIX) -> str:
    return prefix + base64.urlsafe_b64encode(stream.encode()).rstrip(b"=").decode()


class NatsBroker:
    def __init__(self, url: str) -> None:
        # A cluster is a comma-separated list (`nats://a:4222,nats://b:4222?namespace=eu1`):
        # the client picks a live server and fails over between them.
        parts = [split_namespace(u.strip()) for u in url.split(",") if u.strip()]
        self.servers = [u for u, _ in parts]
        namespaces = {ns for _, ns in parts if ns}
        if len(namespaces) > 1:
            raise ValueError(f"one broker namespace per URL list: got {sorted(namespaces)}")
        namespace = namespaces.pop() if namespaces else ""
        self.url = ",".join(self.servers)
        self.prefix = f"clarion.{namespace}.{WIRE}.s." if namespace else PREFIX
        self.nc: Any = None
        self.subs: dict[str, Any] = {}
        self._on_event: EventHandler | None = None
        self._on_reset: ResetHandler | None = None

    async def connect(self, on_event: EventHandler, on_reset: ResetHandler) -> None:
        self._on_event, self._on_reset = on_event, on_reset

        async def reconnected() -> None:
            log.warning("nats broker reconnected; refilling from the store")
            on_reset()

        async def disconnected() -> None:
            log.warning("nats broker disconnected")

        self.nc = await nats.connect(
            self.servers,
            reconnected_cb=reconnected,
            disconnected_cb=disconnected,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
        )

    async def close(self) -> None:
        if self.nc is not None:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    async def publish(self, event: StoredEvent) -> None:
        await self.nc.publish(subject(event.stream, self.prefix), pack(event))

    async def subscribe(self, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in self.subs:
                continue

            async def handler(msg: Any, stream: str = stream) -> None:
                event = unpack(stream, msg.data)
                if self._on_event is not None and event is not None:
                    self._on_event(event)

            self.subs[stream] = await self.nc.subscribe(subject(stream, self.prefix), cb=handler)

    async def unsubscribe(self, streams: Iterable[str]) -> None:
        for stream in streams:
            sub = self.subs.pop(stream, None)
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
