"""An event encoded once, with its per-transport framings computed once and shared.

The hub hands the same `Frame` to every connection that follows the event's stream; each
transport takes the bytes it needs (`ws`, `sse`) and writes them unchanged, so a broadcast to
N connections costs one JSON encoding and one WebSocket header, not N. What routing needs
(`also`, the notification's type, a control event's arguments) comes typed with the event
(`domain.Meta`); nothing here reads the JSON.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import orjson

from clarion.domain import CONTROL_KINDS, Meta, StoredEvent
from clarion.streams import cursor_tail


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked RFC 6455 text frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


class Frame:
    """One event. `stream`/`seq` are set for stream events; 0 seq means not part of a stream.

    `also` maps the other streams of a notification sent to several, that take precedence
    (a session entitled to one of them shows it from there); `ntype` is a notification's
    type; `control` is the event's metadata when it changes what the user's sessions follow
    (follow, unfollow, preferences); `accepted` is when a live notification's publish was
    accepted (Unix seconds; 0: not timed), for the hub's publish-to-socket latency."""

    __slots__ = (
        "_sse",
        "_sse_tail",
        "_ws",
        "accepted",
        "also",
        "body",
        "control",
        "ntype",
        "seq",
        "stream",
    )

    def __init__(self, body: bytes, stream: str = "", seq: int = 0) -> None:
        self.body = body
        self.stream = stream
        self.seq = seq
        self.also: Mapping[str, int] | None = None
        self.ntype = ""
        self.control: Meta | None = None
        self.accepted = 0.0
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._sse_tail: bytes | None = None

    @classmethod
    def of(cls, event: dict[str, Any]) -> Frame:
        return cls(orjson.dumps(event), event.get("stream", ""), event.get("seq", 0))

    @classmethod
    def event(cls, event: StoredEvent) -> Frame:
        """A stream event from the store or the broker, routed by its metadata."""
        frame = cls(event.payload, event.stream, event.seq)
        meta = event.meta
        frame.also = meta.also
        frame.ntype = meta.type
        frame.accepted = meta.accepted
        if meta.kind in CONTROL_KINDS:
            frame.control = meta
        return frame

    @property
    def ws(self) -> bytes:
        if self._ws is None:
            self._ws = ws_text_frame(self.body)
        return self._ws

    @property
    def sse(self) -> bytes:
        """The `data:` part of an SSE message; the `id:` line is per connection."""
        if self._sse is None:
            self._sse = b"data: " + self.body + b"\n\n"
        return self._sse

    @property
    def sse_tail(self) -> bytes:
        """A stream event's SSE message after the connection's part of its `id:` line (a
        `streams.cursor_head`): the cursor's tail for this stream and seq, then `data:`."""
        if self._sse_tail is None:
            self._sse_tail = cursor_tail(self.stream, self.seq) + b"\n" + self.sse
        return self._sse_tail
