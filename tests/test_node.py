"""The delivery core in process: a broker that hangs must not hold back acknowledgements."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from clarion import node as node_module
from clarion.config import Settings
from clarion.models import PublishIn
from clarion.node import Node


class HangingBroker:
    """Accepts subscriptions, then never finishes a publish (a broker behind a dead link)."""

    async def connect(self, on_event: Callable[..., None], on_reset: Callable[[], None]) -> None:
        pass

    async def close(self) -> None:
        pass

    async def subscribe(self, streams: list[str]) -> None:
        pass

    async def unsubscribe(self, streams: list[str]) -> None:
        pass

    async def publish(self, event: object) -> None:
        await asyncio.Event().wait()


async def test_a_hung_broker_does_not_hold_back_the_201(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_module, "BROKER_TIMEOUT", 0.2)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret="x" * 40)
    node = Node(settings)
    node.broker = node.hub.broker = HangingBroker()  # type: ignore[assignment]
    await node.start()
    try:
        result = await asyncio.wait_for(node.publish(PublishIn(users=["a"], title="t"), None), 10)
        stored = await node.store.events_after("user:a", 0, 10)
        assert [e.seq for e in stored] == [1] and result.recipients == 1
    finally:
        await node.stop()
