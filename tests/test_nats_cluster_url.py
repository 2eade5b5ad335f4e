"""The NATS broker takes a cluster as a comma-separated URL list: the namespace applies to all,
and when the server it is connected to dies, the client fails over to another of the list and
the node is told to refill (`on_reset`). Two private nats-servers (not clustered: the test only
needs the client to move), each our own process on a free loopback port."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from clarion.broker.nats import NatsBroker
from clarion.domain import StoredEvent
from harness.services import PrivateService
from harness.util import eventually_async

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`


def test_url_list_and_namespace() -> None:
    broker = NatsBroker("nats://a:4222, nats://b:4223?namespace=eu1")
    assert broker.servers == ["nats://a:4222", "nats://b:4223"]
    assert broker.prefix == "clarion.eu1.w3.s."
    with pytest.raises(ValueError, match="namespace"):
        NatsBroker("nats://a:4222?namespace=x,nats://b:4222?namespace=y")


async def test_fails_over_to_another_server_of_the_list(tmp_path: Path) -> None:
    first, second = (tmp_path / "1", tmp_path / "2")
    first.mkdir()
    second.mkdir()
    one, two = PrivateService("nats", first).start(), PrivateService("nats", second).start()
    try:
        broker = NatsBroker(f"{one.url},{two.url}")
        got: list[StoredEvent] = []
        resets: list[float] = []
        await broker.connect(got.append, lambda: resets.append(time.monotonic()))
        try:
            await broker.subscribe(["user:x"])
            connected = broker.nc.connected_url.port
            (one if connected == one.port else two).kill()
            await eventually_async(
                lambda: resets, 10, "failover to the other server", interval=0.05
            )
            assert broker.nc.connected_url.port != connected
            # The subscription moved with it: a message published through the live server
            # (by another connection) arrives.
            other = NatsBroker(one.url if connected == two.port else two.url)
            await other.connect(lambda e: None, lambda: None)
            try:
                deadline = time.monotonic() + 5
                while not got:
                    assert time.monotonic() < deadline, "the subscription did not move"
                    await other.publish(StoredEvent("user:x", 1, b"after failover"))
                    await asyncio.sleep(0.05)
            finally:
                await other.close()
            assert got[0] == StoredEvent("user:x", 1, b"after failover")
        finally:
            await broker.close()
    finally:
        one.kill()
        two.kill()
