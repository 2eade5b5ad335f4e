"""Pre-encoded frames: the bytes the hub writes must be what a WebSocket client parses."""

from __future__ import annotations

import orjson
import pytest
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode
from websockets.protocol import Protocol, Side, State
from websockets.streams import StreamReader

from clarion import frames
from clarion.broker.base import pack, unpack
from clarion.broker.memory import MemoryBroker
from clarion.domain import Meta, StoredEvent
from clarion.frames import Frame, ws_text_frame

SIZES = [0, 1, 125, 126, 127, 65535, 65536, 70000]


def payload_of(size: int) -> bytes:
    """Printable ASCII that varies, so a misplaced offset cannot go unnoticed."""
    return bytes(33 + (i * 7) % 94 for i in range(size))


def parse_one(data: bytes) -> WsFrame:
    """Parse exactly one unmasked frame with websockets' own parser; it must use all bytes."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    parser = WsFrame.parse(reader.read_exact, mask=False, max_size=None)
    try:
        next(parser)
    except StopIteration as done:
        frame: WsFrame = done.value
    else:
        pytest.fail("parser wanted more bytes than the frame holds")
    assert not reader.buffer, "bytes left over after the frame"
    return frame


@pytest.mark.parametrize("size", SIZES)
def test_parses_as_one_final_text_frame(size: int) -> None:
    payload = payload_of(size)
    frame = parse_one(ws_text_frame(payload))
    assert frame.opcode is Opcode.TEXT
    assert frame.fin and not (frame.rsv1 or frame.rsv2 or frame.rsv3)
    assert bytes(frame.data) == payload


@pytest.mark.parametrize("size", SIZES)
def test_same_bytes_as_websockets_serializes(size: int) -> None:
    """Minimal length encoding (RFC 6455 5.2): 7-bit, then 16-bit, then 64-bit lengths."""
    payload = payload_of(size)
    assert ws_text_frame(payload) == WsFrame(Opcode.TEXT, payload).serialize(mask=False)
    header = 2 if size < 126 else 4 if size < 65536 else 10
    assert len(ws_text_frame(payload)) == header + size


def test_a_client_protocol_receives_them_back_to_back_in_pieces() -> None:
    """As on a real socket: frames concatenated, then split at arbitrary points."""
    client = Protocol(Side.CLIENT, max_size=None)
    payloads = [payload_of(size) for size in SIZES]
    stream = b"".join(ws_text_frame(p) for p in payloads)
    for start in range(0, len(stream), 997):
        client.receive_data(stream[start : start + 997])
    events = client.events_received()
    assert client.state is State.OPEN
    assert [(e.opcode, e.fin) for e in events] == [(Opcode.TEXT, True)] * len(SIZES)
    assert [bytes(e.data) for e in events] == payloads
    assert client.parser_exc is None and not client.data_to_send()


def test_frame_of_an_event() -> None:
    frame = Frame.of({"type": "notification", "stream": "all", "seq": 7, "n": "é"})
    assert (frame.stream, frame.seq) == ("all", 7)
    assert orjson.loads(frame.body) == {"type": "notification", "stream": "all", "seq": 7, "n": "é"}
    plain = Frame.of({"type": "pong"})
    assert (plain.stream, plain.seq) == ("", 0)


def test_framings_are_computed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []

    def counting(payload: bytes) -> bytes:
        calls.append(payload)
        return ws_text_frame(payload)

    monkeypatch.setattr(frames, "ws_text_frame", counting)
    frame = Frame(b'{"type":"notification"}', "all", 1)
    first_ws, first_sse = frame.ws, frame.sse
    assert frame.ws is first_ws
    assert frame.sse is first_sse
    assert len(calls) == 1
    assert first_ws == ws_text_frame(frame.body)
    assert first_sse == b'data: {"type":"notification"}\n\n'


def test_a_stream_event_is_routed_by_its_metadata_not_its_bytes() -> None:
    # A payload whose text looks like another event's: nothing may be read from it.
    body = b'{"type":"follow","also":{"all":1},"notification":{"type":"x"}}'
    frame = Frame.event(StoredEvent("user:a", 3, body, Meta("notification", "chat", {"all": 2})))
    assert (frame.stream, frame.seq, frame.body) == ("user:a", 3, body)
    assert (frame.also, frame.ntype, frame.control) == ({"all": 2}, "chat", None)
    follow = Meta("follow", topic="topic:t", at=5)
    assert Frame.event(StoredEvent("user:a", 4, b"{}", follow)).control is follow
    plain = Frame.event(StoredEvent("user:a", 5, body, Meta("state")))
    assert (plain.also, plain.ntype, plain.control) == (None, "", None)


@pytest.mark.parametrize(
    "meta",
    [
        Meta(),
        Meta("notification", "chat", {"all": 2, "role:é": 9}),
        Meta("unfollow", topic="topic:x y", at=12),
        Meta("preferences", muted=("a", "b")),
    ],
)
def test_the_broker_envelope_carries_the_metadata_and_the_bytes_unchanged(meta: Meta) -> None:
    event = StoredEvent("topic:t", 2**40, payload_of(300), meta)
    assert unpack("topic:t", pack(event)) == event
    assert unpack("topic:t", b"short") is None
    assert unpack("topic:t", pack(event)[:12]) is None


async def test_the_memory_broker_hands_over_the_very_bytes() -> None:
    got: list[StoredEvent] = []
    broker = MemoryBroker()
    await broker.connect(got.append)
    event = StoredEvent("all", 1, payload_of(10), Meta("notification", "x"))
    await broker.publish(event)
    assert got[0].payload is event.payload
