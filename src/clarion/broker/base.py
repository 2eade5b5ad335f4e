"""The broker interface: five methods, one file per backend, chosen by URL scheme.

The broker is not the source of truth (the store is): it only says "stream S has event N" with
the event's bytes, so nodes can push it to their connections at once. A node that lost messages
(reconnect, outage) is told through `on_reset` and refills from the store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

EventHandler = Callable[[str, int, bytes], None]
ResetHandler = Callable[[], None]


class Broker(Protocol):
    async def connect(self, on_event: EventHandler, on_reset: ResetHandler) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, stream: str, seq: int, payload: bytes) -> None: ...
    async def subscribe(self, streams: Iterable[str]) -> None: ...
    async def unsubscribe(self, streams: Iterable[str]) -> None: ...


def open_broker(url: str) -> Broker:
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        from clarion.broker.memory import MemoryBroker

        return MemoryBroker()
    if scheme in ("redis", "rediss"):
        from clarion.broker.redis import RedisBroker

        return RedisBroker(url)
    if scheme in ("nats", "tls"):
        from clarion.broker.nats import NatsBroker

        return NatsBroker(url)
    raise ValueError(f"unsupported broker URL {url!r}: use memory://, redis:// or nats://")
