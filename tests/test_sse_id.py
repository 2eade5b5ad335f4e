"""The SSE `id:` line without the whole cursor per event (issue #17, docs/protocol.md "Server-Sent
Events"): a detached stream (`RawStream`) writes a head of its own, encoded again only when a
stream other than the event's moved or the followed streams changed, and the event's shared
tail. Each `id:` must still be exactly the connection's cursor after its event."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from types import SimpleNamespace
from typing import Any

import httpx
import orjson
import pytest

from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session
from clarion.streams import cursor_head, decode_cursor, encode_cursor
from clarion.transports import sse
from clarion.transports.cork import after_write
from clarion.transports.sse import RawStream
from harness.server import Server


class Transport:
    """What `RawStream` writes to: the bytes, never full."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False


def event(stream: str, seq: int, ntype: str = "") -> Frame:
    frame = Frame(b'{"type":"notification","stream":"%b"}' % stream.encode(), stream, seq)
    frame.ntype = ntype
    return frame


def ids_of(data: bytes) -> list[dict[str, int]]:
    """The position in each `id:` line of a chunked SSE body."""
    return [decode_cursor(line[4:].decode()) for line in data.split(b"\n") if line[:4] == b"id: "]


# Each step acts on the live session as the hub does; the expected ids are the positions after
# each delivered event.
Step = Callable[[Session], None]


def deliver(stream: str, seq: int, ntype: str = "") -> Step:
    def step(session: Session) -> None:
        assert session.deliver(event(stream, seq, ntype))

    return step


def follow(stream: str, since: int) -> Step:
    def step(session: Session) -> None:
        session.streams.append(stream)
        session.position[stream] = since

    return step


def unfollow(stream: str) -> Step:
    def step(session: Session) -> None:
        session.streams.remove(stream)
        session.position.pop(stream)

    return step


SCENARIOS: dict[str, tuple[dict[str, int], list[Step], int]] = {
    # broadcasts to `all`: one head for all of them
    "same-stream": ({"user:ann": 3, "all": 10}, [deliver("all", s) for s in range(11, 61)], 1),
    "one-stream-only": ({"all": 0}, [deliver("all", s) for s in range(1, 21)], 1),
    "alternating": (
        {"user:ann": 3, "all": 10},
        [deliver("all", 11), deliver("user:ann", 4), deliver("all", 12), deliver("user:ann", 5)],
        4,
    ),
    # a muted type on a topic moves the topic's position without a write: the next id has it
    "skipped-elsewhere": (
        {"user:ann": 3, "all": 10, "topic:x": 5},
        [deliver("all", 11), deliver("topic:x", 6, "digest"), deliver("all", 12)],
        2,
    ),
    # the same number of streams and the same sum of seqs, but another stream
    "unfollow-then-follow": (
        {"all": 10, "topic:x": 5},
        [deliver("all", 11), unfollow("topic:x"), follow("topic:y", 5), deliver("all", 12)],
        2,
    ),
    "follow-adds-a-stream": (
        {"all": 10},
        [deliver("all", 11), follow("topic:y", 0), deliver("all", 12)],
        2,
    ),
    "a-duplicate-writes-nothing": (
        {"all": 10},
        [deliver("all", 11), deliver("all", 11), deliver("all", 12)],
        1,
    ),
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_each_id_is_the_cursor_after_its_event(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    start, steps, heads = SCENARIOS[name]
    encoded: list[str] = []

    def counted(position: Mapping[str, int], moved: str) -> bytes:
        encoded.append(moved)
        return cursor_head(position, moved)

    monkeypatch.setattr(sse, "cursor_head", counted)
    node: Any = SimpleNamespace(hub=None, settings=SimpleNamespace(max_buffer=1 << 20))
    raw = RawStream(node)
    raw.transport = Transport()  # type: ignore[assignment]
    session = Session("ann", list(start), raw)
    session.position, session.live, session.backlog = dict(start), True, None
    session.muted = frozenset({"digest"})
    expected = []
    for step in steps:
        sent = session.sent
        step(session)
        if session.sent > sent:
            expected.append(dict(session.position))
    raw.send(Frame(message("unread", count=0, unseen=0)), session)  # no seq: no id
    written = asyncio.get_running_loop().create_future()
    after_write(lambda: written.set_result(None))
    await written
    assert ids_of(raw.transport.data) == expected
    assert len(encoded) == heads, "the head is encoded again only when another stream moved"


@pytest.mark.parametrize(
    ("cursor", "position"),
    [
        ("eyJ1c2VyOmFsaWNlIjoxMiwgImFsbCI6NTd9", {"user:alice": 12, "all": 57}),  # this form
        ("eyAgImFsbCI6M30", {"all": 3}),  # one stream: an empty head
        ("eyJhbGwiOjU3LCJ1c2VyOmFsaWNlIjoxMn0", {"user:alice": 12, "all": 57}),  # sorted, before
    ],
    ids=["head-and-tail", "empty-head", "sorted-before"],
)
def test_documented_id_forms_decode(cursor: str, position: dict[str, int]) -> None:
    """docs/protocol.md's examples: `Last-Event-ID` of either age resumes."""
    assert decode_cursor(cursor) == position


def _stream(server: Server, user: str, last_id: str, want: int) -> list[tuple[str, str]]:
    """(id, title) of the first `want` notifications of an SSE stream resumed at `last_id`."""
    got: list[tuple[str, str]] = []
    ticket = httpx.post(server.url + "/v1/tickets", headers=server.me(user)).json()["ticket"]
    headers = {"Last-Event-ID": last_id}
    with httpx.stream(
        "GET", server.url + "/v1/sse", params={"ticket": ticket}, headers=headers, timeout=10
    ) as resp:
        assert resp.status_code == 200
        event_id = ""
        for line in resp.iter_lines():
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                event = orjson.loads(line[6:])
                if event["type"] == "notification":
                    got.append((event_id, event["notification"]["title"]))
                    if len(got) == want:
                        break
    return got


def test_ids_through_a_server_resume_across_streams(fresh_server: Server) -> None:
    """A real stream whose events alternate between the user's stream and `all`: each `id:`
    is the position after its event, and resuming from the last one brings only what came
    after, on both streams."""
    server = fresh_server.start()
    u = "sse-id"
    for title, to in [("u1", {"users": [u]}), ("a1", {"all": True})] * 2:
        assert server.publish(title=title, **to).status_code == 201
    start = encode_cursor({f"user:{u}": 0, "all": 0})
    got = _stream(server, u, start, 4)
    # the replay goes stream by stream: the user's, then `all`
    assert [title for _, title in got] == ["u1", "u1", "a1", "a1"]
    assert [decode_cursor(i) for i, _ in got] == [
        {f"user:{u}": 1, "all": 0},
        {f"user:{u}": 2, "all": 0},
        {f"user:{u}": 2, "all": 1},
        {f"user:{u}": 2, "all": 2},
    ]
    server.publish(title="u3", users=[u])
    server.publish(title="a3", all=True)
    again = _stream(server, u, got[-1][0], 2)
    assert sorted(title for _, title in again) == ["a3", "u3"]
    assert decode_cursor(again[-1][0]) == {f"user:{u}": 3, "all": 3}
