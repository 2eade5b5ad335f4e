"""The Redis and NATS brokers against real servers, then two nodes that share PostgreSQL and a
broker: what happens on one node reaches sockets on the other.

Each run uses its own broker namespace (`?namespace=`), so runs sharing a server stay apart.
Needs Redis / NATS / PostgreSQL (`CLARION_TEST_REDIS`, `_NATS`, `_POSTGRES`): skipped without
them, failed without them in CI.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from clarion.broker import Broker, open_broker
from clarion.domain import Meta, StoredEvent
from harness.server import Live, Server
from harness.services import NATS_URL, REDIS_URL, postgres_database, require_service
from harness.util import eventually_async, user_id

SERVICES = {"redis": ("Redis", REDIS_URL), "nats": ("NATS", NATS_URL)}
RUN = "t" + secrets.token_hex(4)


def _namespaced(url: str) -> str:
    return url + ("&" if "?" in url else "?") + f"namespace={RUN}"


@pytest.fixture(params=["redis", "nats"])
def broker_url(request: pytest.FixtureRequest) -> str:
    name, url = SERVICES[request.param]
    require_service(name, url)
    return _namespaced(url)


class Node:
    """One broker connection and what it received."""

    def __init__(self, url: str) -> None:
        self.broker: Broker = open_broker(url)
        self.got: list[tuple[str, int, bytes]] = []
        self.events: list[StoredEvent] = []
        self.resets = 0

    async def __aenter__(self) -> Node:
        await self.broker.connect(self._got, self._reset)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.broker.close()

    def _got(self, event: StoredEvent) -> None:
        self.got.append((event.stream, event.seq, event.payload))
        self.events.append(event)

    def _reset(self) -> None:
        self.resets += 1

    def of(self, stream: str) -> list[tuple[int, bytes]]:
        return [(seq, payload) for s, seq, payload in self.got if s == stream]

    async def wait(self, stream: str, count: int = 1) -> None:
        await eventually_async(
            lambda: len(self.of(stream)) >= count, 5, f"{count} on {stream!r}", interval=0.01
        )


async def _ready(publisher: Node, subscriber: Node, stream: str) -> None:
    """Publish probes (seq 0) until the subscription is live on the server, then forget them."""
    deadline = time.monotonic() + 5
    while not subscriber.of(stream):
        assert time.monotonic() < deadline, f"subscription to {stream!r} never became live"
        await publisher.broker.publish(StoredEvent(stream, 0, b"probe"))
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.05)
    subscriber.got.clear()


def _stream(label: str = "s") -> str:
    return f"{label}:{secrets.token_hex(4)}"


@pytest.fixture
async def trio(broker_url: str) -> AsyncIterator[tuple[Node, Node, Node]]:
    """A publisher and two subscribers, each its own connection."""
    async with Node(broker_url) as pub, Node(broker_url) as a, Node(broker_url) as b:
        yield pub, a, b


async def test_delivers_to_subscribers_only(trio: tuple[Node, Node, Node]) -> None:
    pub, a, b = trio
    stream, marker = _stream(), _stream("marker")
    await a.broker.subscribe([stream])
    await b.broker.subscribe([marker])
    await _ready(pub, a, stream)
    await _ready(pub, b, marker)
    for seq in (1, 2, 3):
        await pub.broker.publish(StoredEvent(stream, seq, b'{"n":%d}' % seq))
    await pub.broker.publish(
        StoredEvent(marker, 1, b"m")
    )  # after the others, on the same connection
    await a.wait(stream, 3)
    await b.wait(marker)
    assert a.of(stream) == [(1, b'{"n":1}'), (2, b'{"n":2}'), (3, b'{"n":3}')]
    assert b.of(stream) == [] and a.of(marker) == []


async def test_unsubscribe_stops_delivery(trio: tuple[Node, Node, Node]) -> None:
    pub, a, _ = trio
    stream, marker = _stream(), _stream("marker")
    await a.broker.subscribe([stream, marker])
    await _ready(pub, a, stream)
    await _ready(pub, a, marker)
    await a.broker.unsubscribe([stream])
    await asyncio.sleep(0.2)  # let the server apply it (no confirmation is awaited)
    await pub.broker.publish(StoredEvent(stream, 1, b"gone"))
    await pub.broker.publish(StoredEvent(marker, 1, b"m"))
    await a.wait(marker)
    await asyncio.sleep(0.1)
    assert a.of(stream) == []
    await a.broker.subscribe([stream])  # and subscribing again resumes it
    await _ready(pub, a, stream)
    await pub.broker.publish(StoredEvent(stream, 2, b"back"))
    await a.wait(stream)
    assert a.of(stream) == [(2, b"back")]


async def test_several_streams_and_odd_names(trio: tuple[Node, Node, Node]) -> None:
    pub, a, _ = trio
    tag = secrets.token_hex(4)
    names = [
        f"user:{tag}",
        f"topic:project 42 {tag}",
        f"user:zoë ☃ {tag}",
        f"topic:a.b.c.{tag}",
        f"role:*>{tag}",  # NATS wildcards
        f"user:{tag}:colon/slash?#",
    ]
    await a.broker.subscribe(names)
    for name in names:
        await _ready(pub, a, name)
    for seq in (1, 2):
        for i, name in enumerate(names):
            await pub.broker.publish(StoredEvent(name, seq, f"{i}-{seq}".encode()))
    for name in names:
        await a.wait(name, 2)
    for i, name in enumerate(names):
        assert a.of(name) == [(1, f"{i}-1".encode()), (2, f"{i}-2".encode())]
    assert len(a.got) == 2 * len(names)


async def test_namespaces_keep_clusters_apart(broker_url: str) -> None:
    other = broker_url.replace(f"namespace={RUN}", f"namespace={RUN}x")
    stream = _stream()
    async with Node(broker_url) as pub, Node(broker_url) as same, Node(other) as apart:
        await same.broker.subscribe([stream])
        await apart.broker.subscribe([stream])
        await _ready(pub, same, stream)
        await pub.broker.publish(StoredEvent(stream, 1, b"mine"))
        await same.wait(stream)
        await asyncio.sleep(0.2)
        assert apart.of(stream) == []


async def test_the_metadata_travels_typed_beside_the_bytes(trio: tuple[Node, Node, Node]) -> None:
    pub, a, _ = trio
    stream = _stream()
    await a.broker.subscribe([stream])
    await _ready(pub, a, stream)
    sent = [
        StoredEvent(stream, 1, b'{"x":1}', Meta("notification", "chat", {"all": 7, "role:x": 2})),
        StoredEvent(stream, 2, b"{}", Meta("follow", topic="topic:t", at=41)),
        StoredEvent(stream, 3, b"", Meta("preferences", muted=("chat", "like"))),
        StoredEvent(stream, 4, b"\x00not json", Meta("state")),
    ]
    for event in sent:
        await pub.broker.publish(event)
    await a.wait(stream, len(sent))
    assert [e for e in a.events if e.seq] == sent  # (seq 0: the probes of `_ready`)


def test_bad_namespace_is_refused() -> None:
    with pytest.raises(ValueError, match="namespace"):
        open_broker("redis://127.0.0.1:6379/0?namespace=a.b")


# -- two nodes ----------------------------------------------------------------------------------


@pytest.fixture
def two_nodes(
    broker_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    with postgres_database() as db:
        env = {"CLARION_DATABASE_URL": db, "CLARION_BROKER_URL": broker_url}
        a = Server(tmp_path_factory.mktemp("node-a"), env)
        b = Server(tmp_path_factory.mktemp("node-b"), {**env, "CLARION_JWT_SECRET": a.secret})
        b.secret = a.secret
        try:
            a.start()
            b.api_key = a.api_key
            b.start()
            yield a, b
        finally:
            for node in (a, b):
                node.kill(signal.SIGTERM)


def _within(live: Live, kind: str, seconds: float = 1.5) -> dict[str, Any]:
    """The next `kind` event, which must come from the broker: the nodes' own check of the
    store's heads runs every 5 s, so anything slower than `seconds` did not come through it."""
    return live.until(kind, timeout=seconds)


@pytest.mark.slow  # a whole-system run (several processes, or a kill): make test-slow
def test_two_nodes_share_events_through_the_broker(two_nodes: tuple[Server, Server]) -> None:
    a, b = two_nodes
    u = user_id()
    live = a.connect(u)
    try:
        live.until("unread")
        for i in range(3):
            r = b.publish(users=[u], title=f"from b {i}")
            assert r.status_code == 201, r.text
            event = _within(live, "notification")
            assert event["notification"]["id"] == r.json()["id"]
            assert event["seq"] == i + 1

        nid = r.json()["id"]
        read = httpx.post(f"{b.url}/v1/me/notifications/{nid}/read", headers=b.me(u))
        assert read.status_code == 200, read.text
        state = _within(live, "state")
        assert (state["change"], state["ids"], state["unread"]) == ("read", [nid], 2)
        assert state["stream"] == f"user:{u}" and state["seq"] == 4

        r = b.publish(all=True, title="everyone")
        event = _within(live, "notification")
        assert event["stream"] == "all" and event["notification"]["id"] == r.json()["id"]
    finally:
        live.close()
