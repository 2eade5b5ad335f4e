"""In-process broker: one node, no network. Publishing hands the event straight to the hub."""

from __future__ import annotations

from collections.abc import Iterable

from clarion.broker.base import EventHandler
from clarion.domain import StoredEvent


class MemoryBroker:
    def __init__(self) -> None:
        self._on_event: EventHandler | None = None

    async def connect(self, on_event: EventHandler, on_reset: object = None) -> None:
        self._on_event = on_event

    async def close(self) -> None:
        self._on_event = None

    async def publish(self, event: StoredEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)

    async def subscribe(self, streams: Iterable[str]) -> None:
        """Nothing to do: the hub ignores streams nobody here follows."""

    async def unsubscribe(self, streams: Iterable[str]) -> None:
        """Nothing to do, as for subscribe."""
