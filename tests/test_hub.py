"""The hub without sockets: a fake store, the memory broker and sinks that record frames."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from clarion import hub as hub_module
from clarion.broker.memory import MemoryBroker
from clarion.domain import Meta, Snapshot, StoredEvent
from clarion.frames import Frame
from clarion.hub import CLOSE_SLOW_CONSUMER, Hub, Session
from clarion.stats import connections_by_transport
from clarion.streams import ALL, encode_cursor
from clarion.transports.sse import SSESink
from harness.util import eventually_async

A, B = "user:a", "user:b"


class FakeStore:
    """Per-stream logs in memory; `events_after` can be held at a gate to stage races."""

    def __init__(self) -> None:
        self.logs: dict[str, list[StoredEvent]] = defaultdict(list)
        self.unread = 0
        self.gates: dict[str, asyncio.Event] = {}
        self.waiting = asyncio.Event()  # set when a read is held at a gate
        self.read_before_gate = True  # take the page before waiting (else after)
        self.reads: list[tuple[str, int, int]] = []
        self.heads_read: list[list[str]] = []  # what `heads` was asked (not the snapshots)
        self.topics: list[str] = []  # what every user follows, as snapshots report it

    def add(self, stream: str) -> StoredEvent:
        seq = len(self.logs[stream]) + 1
        body = {"type": "notification", "stream": stream, "seq": seq}
        event = StoredEvent(stream, seq, orjson.dumps(body))
        self.logs[stream].append(event)
        return event

    def _page(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        return [e for e in self.logs[stream] if e.seq > seq][:limit]

    async def heads(self, names: list[str]) -> dict[str, int]:
        self.heads_read.append(list(names))
        return self._heads(names)

    def _heads(self, names: list[str]) -> dict[str, int]:
        return {n: len(self.logs[n]) for n in names}

    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        self.reads.append((stream, seq, limit))
        page = self._page(stream, seq, limit)
        gate = self.gates.get(stream)
        if gate is not None and not gate.is_set():
            self.waiting.set()
            await gate.wait()
            if not self.read_before_gate:
                page = self._page(stream, seq, limit)
        return page

    async def unread_count(self, user: str) -> int:
        return self.unread

    async def snapshots(self, wanted: list[tuple[str, list[str], bool]]) -> list[Snapshot]:
        since = dict.fromkeys(self.topics, 0)
        return [
            Snapshot(
                self._heads([*names, *self.topics]), self.unread, self.topics, frozenset(), since
            )
            for _, names, _ in wanted
        ]


class FakeSink:
    """Records what the hub offers it, in order; `full` makes `send` refuse like a real sink."""

    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []
        self.full = False
        self.closed: tuple[int, str] | None = None

    def send(self, frame: Frame, session: Session) -> bool:
        self.log.append(("refused" if self.full else "sent", frame))
        return not self.full

    async def drain(self) -> None:
        self.full = False

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        if last is not None:  # a final frame handed over with the close, if the sink API has it
            self.log.append(("last", last))
        self.closed = (code, reason)
        self.log.append(("close", code))

    @property
    def frames(self) -> list[Frame]:
        return [f for kind, f in self.log if kind == "sent"]

    def events(self) -> list[dict[str, Any]]:
        return [orjson.loads(f.body) for f in self.frames]

    def seqs(self, stream: str) -> list[int]:
        return [e["seq"] for e in self.events() if e.get("stream") == stream]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events()]


class RecordingBroker(MemoryBroker):
    def __init__(self) -> None:
        super().__init__()
        self.unsubscribed: list[list[str]] = []

    async def unsubscribe(self, streams: Any) -> None:
        self.unsubscribed.append(list(streams))


async def settle() -> None:
    """Let spawned tasks (gap fills, unsubscribes) run to completion."""
    for _ in range(20):
        await asyncio.sleep(0)


@pytest.fixture
def store() -> FakeStore:
    return FakeStore()


@pytest.fixture
def broker() -> RecordingBroker:
    return RecordingBroker()


@pytest.fixture
async def hub(store: FakeStore, broker: RecordingBroker) -> AsyncIterator[Hub]:
    h = Hub(store, broker, check_interval=3600)  # type: ignore[arg-type]
    await h.start()
    yield h
    await h.stop()
    await settle()


async def publish(store: FakeStore, broker: MemoryBroker, stream: str) -> StoredEvent:
    """As the node does: commit first, then hand the event to the broker."""
    event = store.add(stream)
    await broker.publish(event)
    return event


async def live(hub: Hub, user: str, streams: list[str], position: dict[str, int] | None = None):
    sink = FakeSink()
    session = Session(user, streams, sink)
    await hub.attach(session, position or {}, {"user": user})
    return session, sink


async def test_in_order_dispatch(hub: Hub, store: FakeStore, broker: MemoryBroker) -> None:
    _, sink = await live(hub, "a", [A, ALL])
    for stream in [A, A, ALL, A, ALL]:
        await publish(store, broker, stream)
    assert sink.types() == ["welcome", "unread"] + ["notification"] * 5
    assert sink.seqs(A) == [1, 2, 3] and sink.seqs(ALL) == [1, 2]


async def test_also_muted_and_control_come_from_the_metadata(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    """Routing reads `Meta` only: these payloads carry nothing a byte search could find."""
    session, sink = await live(hub, "a", [A, ALL])
    session.since[ALL] = 0  # following `all` from its start

    async def send(stream: str, meta: Meta) -> None:
        seq = len(store.logs[stream]) + 1
        event = StoredEvent(stream, seq, b'{"type":"x","seq":%d}' % seq, meta)
        store.logs[stream].append(event)
        await broker.publish(event)

    await send(ALL, Meta("notification", "chat"))
    await send(A, Meta("notification", "chat", {ALL: 1}))  # a copy of the one on `all`
    await send(A, Meta("notification", "chat", {"role:z": 1}))  # not a stream it follows
    await send(A, Meta("preferences", muted=("chat",)))
    await send(ALL, Meta("notification", "chat"))  # muted now
    await send(ALL, Meta("notification", "news"))
    assert [(f.stream, f.seq) for f in sink.frames if f.seq] == [
        (ALL, 1),
        (A, 2),
        (A, 3),
        (ALL, 3),
    ]
    assert session.muted == frozenset({"chat"})


async def test_duplicates_are_dropped(hub: Hub, store: FakeStore, broker: MemoryBroker) -> None:
    _, sink = await live(hub, "a", [A])
    one, two = store.add(A), store.add(A)
    for event in [one, one, two, one, two]:
        hub.on_event(event)
    assert sink.seqs(A) == [1, 2]


async def test_a_gap_is_filled_from_the_store_first(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    for _ in range(3):
        store.add(A)
    _, sink = await live(hub, "a", [A], {A: 3})
    store.gates[A] = asyncio.Event()
    four, five = store.add(A), store.add(A)
    hub.on_event(five)  # the broker lost 4
    await asyncio.wait_for(store.waiting.wait(), 2)
    assert sink.seqs(A) == [], "5 must wait for 4"
    six = await publish(store, broker, A)  # arrives while the fill is running
    hub.on_event(four)  # the late original of 4
    store.gates[A].set()
    await eventually_async(lambda: len(sink.seqs(A)) == 3, interval=0)
    await settle()
    assert sink.seqs(A) == [4, 5, 6]
    assert store.reads[-1][:2] == (A, 3) and six.seq == 6
    await publish(store, broker, A)
    assert sink.seqs(A) == [4, 5, 6, 7]


@pytest.mark.parametrize("read_before_gate", [True, False], ids=["snapshot-early", "late"])
async def test_attach_replays_then_goes_live_without_loss_or_duplicates(
    hub: Hub, store: FakeStore, broker: MemoryBroker, read_before_gate: bool
) -> None:
    for stream in [A, A, A, ALL, ALL]:
        store.add(stream)
    store.unread = 4
    store.read_before_gate = read_before_gate
    store.gates[A] = asyncio.Event()
    sink = FakeSink()
    session = Session("a", [A, ALL], sink)
    attach = asyncio.ensure_future(hub.attach(session, {A: 1}, {"user": "a"}))
    await asyncio.wait_for(store.waiting.wait(), 2)
    # While the replay of user:a is held, events are committed and broadcast on both streams.
    await publish(store, broker, A)
    await publish(store, broker, A)
    await publish(store, broker, ALL)
    store.gates[A].set()
    assert (await asyncio.wait_for(attach, 2))[1] is False
    await publish(store, broker, A)
    await publish(store, broker, ALL)

    events = sink.events()
    assert events[0] == {"type": "welcome", "user": "a", "cursor": encode_cursor({A: 1, ALL: 2})}
    assert sink.seqs(A) == [2, 3, 4, 5, 6]
    assert sink.seqs(ALL) == [3, 4]
    types = sink.types()
    assert types.count("unread") == 1 and events[types.index("unread")]["count"] == 4
    replayed = types.index("unread") - 1
    assert replayed >= 2 and set(types[1 : replayed + 1]) == {"notification"}
    assert [(e["stream"], e["seq"]) for e in events[1:3]] == [(A, 2), (A, 3)]
    # The count is as of the snapshot (user:a at 3, all at 2): what was committed after it comes
    # after the count, whether the replay's read saw it or not, so each one adds itself to it.
    assert [(e["stream"], e["seq"]) for e in events[1 : replayed + 1]] == [(A, 2), (A, 3)]
    assert session.position == {A: 6, ALL: 4}


async def test_attach_clamps_and_defaults_the_position(hub: Hub, store: FakeStore) -> None:
    for stream in [A, A, ALL, ALL, ALL]:
        store.add(stream)
    _, sink = await live(hub, "a", [A, ALL], {A: 99, "user:zed": 1})
    assert sink.events()[0]["cursor"] == encode_cursor({A: 2, ALL: 3})
    assert sink.types() == ["welcome", "unread"], "nothing to replay: from the heads on"


async def test_replay_pages_and_the_long_poll_limit(
    hub: Hub, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hub_module, "REPLAY_PAGE", 2)
    for _ in range(5):
        store.add(A)
    _, sink = await live(hub, "a", [A], {A: 0})
    assert sink.seqs(A) == [1, 2, 3, 4, 5]
    assert [r[:2] for r in store.reads] == [(A, 0), (A, 2), (A, 4)]

    poll = FakeSink()
    start, more = await hub.attach(Session("a", [A], poll), {A: 0}, None, limit=3)
    assert more is True and poll.seqs(A) == [1, 2, 3] and "welcome" not in poll.types()
    assert start == {A: 0}


async def test_a_full_sink_gets_resync_then_4008(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    slow_session, slow = await live(hub, "a", [A, ALL])
    _, fast = await live(hub, "b", [B, ALL])
    await publish(store, broker, ALL)
    slow.full = True
    await publish(store, broker, ALL)

    (refused, frame), (how, resync), close = slow.log[-3:]
    assert refused == "refused" and orjson.loads(frame.body)["seq"] == 2
    assert how in ("refused", "last")
    assert orjson.loads(resync.body) == {"type": "resync", "reason": "slow_consumer"}
    assert close == ("close", CLOSE_SLOW_CONSUMER)
    assert slow.closed is not None and slow.closed[0] == 4008
    assert slow_session.closed and hub.dropped_slow == 1
    await publish(store, broker, ALL)
    assert hub.dropped_slow == 1, "closed once"
    assert fast.seqs(ALL) == [1, 2, 3], "other sessions are not held back"


async def test_nothing_follows_a_slow_consumer_close(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    _, slow = await live(hub, "a", [A])
    slow.full = True
    await publish(store, broker, A)  # refused: the session is closed
    slow.full = False  # the socket drains before the transport has closed
    await publish(store, broker, A)
    assert slow.log[-1] == ("close", CLOSE_SLOW_CONSUMER)


async def test_sse_slow_consumer_receives_resync(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    sink = SSESink(limit=10)
    await hub.attach(Session("a", [A], sink), {})
    await publish(store, broker, A)  # fills the buffer past its limit
    await publish(store, broker, A)
    assert sink.closed
    assert b'"type":"resync"' in b"".join(sink.chunks)


async def test_one_frame_object_for_every_session(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    sinks = [(await live(hub, u, [f"user:{u}", ALL]))[1] for u in "abc"]
    await publish(store, broker, ALL)
    await publish(store, broker, "user:b")
    shared = [s.frames[2] for s in sinks]
    assert all(f is shared[0] for f in shared), "encode once, write the same bytes everywhere"
    assert all(f.ws is shared[0].ws for f in shared)
    assert [s.seqs("user:b") for s in sinks] == [[], [1], []]


async def test_detach_forgets_empty_streams(
    hub: Hub, store: FakeStore, broker: RecordingBroker
) -> None:
    a, _ = await live(hub, "a", [A, ALL])
    b, _ = await live(hub, "b", [B, ALL])
    hub.detach(a)
    await settle()
    assert set(hub.streams) == {B, ALL} and hub.sessions == {b}
    assert broker.unsubscribed == [[A]]
    hub.detach(b)
    hub.detach(b)  # a transport may detach twice
    await settle()
    assert hub.streams == {} and hub.sessions == set()
    assert sorted(broker.unsubscribed[1]) == sorted([B, ALL])


async def test_a_stream_followed_again_at_once_stays_subscribed(
    hub: Hub, broker: RecordingBroker
) -> None:
    a, _ = await live(hub, "a", [A])
    hub.detach(a)
    await live(hub, "a", [A])  # before the deferred unsubscribe runs
    await settle()
    assert broker.unsubscribed == [] and A in hub.streams


async def test_check_heads_fills_what_the_broker_lost(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    _, sink = await live(hub, "a", [A, ALL])
    await publish(store, broker, A)
    reads = len(store.reads)
    await hub.check_heads()
    await settle()
    assert len(store.reads) == reads, "no read when the store is not ahead"
    store.add(A)
    store.add(A)  # committed, but the broker never said so
    store.add(ALL)
    await hub.check_heads()
    await eventually_async(lambda: len(sink.seqs(A)) == 3 and len(sink.seqs(ALL)) == 1, interval=0)
    assert sink.seqs(A) == [1, 2, 3] and sink.seqs(ALL) == [1]
    store.add(A)
    hub.on_reset()  # a broker reconnect triggers the same check
    await eventually_async(lambda: len(sink.seqs(A)) == 4, interval=0)
    assert sink.seqs(A) == [1, 2, 3, 4]


class ViaSink(FakeSink):
    """A sink that counts how often its transport is asked for."""

    looked = 0

    @property
    def via(self) -> str:
        ViaSink.looked += 1
        return "sse"


async def test_connections_by_transport_are_counted_not_visited(hub: Hub) -> None:
    """The stats snapshot runs every second with the console on: it reads the hub's counts,
    not every session held."""
    sessions = []
    for i in range(3):
        session = Session(f"u{i}", [f"user:u{i}"], ViaSink())
        await hub.attach(session, {}, {"user": f"u{i}"})
        sessions.append(session)
    hub.detach(sessions[0])
    ViaSink.looked = 0
    node = SimpleNamespace(hub=hub)
    assert connections_by_transport(node) == {"websocket": 0, "sse": 2, "poll": 0}  # type: ignore[arg-type]
    assert ViaSink.looked == 0
    for session in sessions[1:]:
        hub.detach(session)
    assert connections_by_transport(node) == {"websocket": 0, "sse": 0, "poll": 0}  # type: ignore[arg-type]


class StutteringSink(FakeSink):
    """Full after every frame it accepts, until drained: a client reading slowly."""

    def send(self, frame: Frame, session: Session) -> bool:
        accepted = super().send(frame, session)
        self.full = True
        return accepted


async def test_replay_waits_out_a_full_buffer_and_drops_nothing(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    for _ in range(5):
        await publish(store, broker, A)
    sink = StutteringSink()
    await hub.attach(Session("a", [A], sink), {A: 0}, {"user": "a"})
    assert sink.seqs(A) == [1, 2, 3, 4, 5]
    assert sink.types() == ["welcome"] + ["notification"] * 5 + ["unread"]


async def test_a_topic_event_dispatched_while_the_snapshot_returns_is_not_lost(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    """Followed topics come from the snapshot, so a session joins their streams after it was
    read: an event committed after that read and dispatched before the join must still come
    (from the store), exactly once."""
    topic = "topic:t"
    store.add(topic)
    await live(hub, "b", [topic])  # another tab here: the hub already dispatches the topic
    plain = store.snapshots

    async def racing(wanted: list[tuple[str, list[str], bool]]) -> list[Snapshot]:
        snaps = [
            Snapshot(await store.heads([*names, topic]), 0, [topic], frozenset(), {topic: 0})
            for _, names, _ in wanted
        ]
        await publish(store, broker, topic)  # after the read, before the session joins
        return snaps

    store.snapshots = racing  # type: ignore[method-assign]
    hub._snapshots._flush = racing  # the hub batches through this
    session, sink = await live(hub, "a", [A], {A: 0, topic: 1})
    store.snapshots = plain  # type: ignore[method-assign]
    await publish(store, broker, topic)
    await settle()
    assert sink.seqs(topic) == [2, 3]
    assert session.position[topic] == 3
    # The unread count is the snapshot's (topic at 1): seq 2 comes after it and adds itself.
    assert sink.types() == ["welcome", "unread", "notification", "notification"]


async def test_a_replay_up_to_a_seq_the_store_skipped_ends(
    hub: Hub, store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Unfollowing after seq 2 when 1 and 2 expired: the store's first page after 0 holds only
    later events, a full page. The replay sends none of them and ends (it read that same page
    forever when a full page meant "read on")."""
    monkeypatch.setattr(hub_module, "REPLAY_PAGE", 2)
    session, sink = await live(hub, "a", [A, ALL])
    for _ in range(4):
        store.add(A)
    del store.logs[A][:2]  # expired: the store skips them
    await asyncio.wait_for(hub.unfollow(session, A, 2), 2)
    assert sink.seqs(A) == [] and A not in session.streams


async def test_a_topic_live_here_is_joined_without_reading_its_head(
    hub: Hub, store: FakeStore, broker: MemoryBroker
) -> None:
    """Another session here follows the topic, so its head here covers every event dispatched
    before the join: no read of it. A topic new here is read from the store."""
    live_here, new_here = "topic:live", "topic:new"
    store.add(live_here)
    store.add(new_here)
    await live(hub, "b", [live_here])
    await publish(store, broker, live_here)  # head here: 2
    store.topics = [live_here, new_here]
    store.heads_read.clear()
    session, sink = await live(hub, "a", [A], {A: 0, live_here: 1, new_here: 0})
    assert store.heads_read == [[new_here]]
    await publish(store, broker, live_here)
    await publish(store, broker, new_here)
    assert sink.seqs(live_here) == [2, 3] and sink.seqs(new_here) == [1, 2]
    assert session.position == {A: 0, live_here: 3, new_here: 2}
