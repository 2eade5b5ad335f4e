"""An event encoded once, with its per-transport framings computed once and shared.

The hub hands the same `Frame` to every connection that follows the event's stream; each
transport takes the bytes it needs (`ws`, `sse`) and writes them unchanged, so a broadcast to
N connections costs one JSON encoding and one WebSocket header, not N.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson


def ws_text_frame(payload: bytes) -> bytes:
    """A final, unmasked RFC 6455 text frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        return bytes((0x81, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", 0x81, 126, n) + payload
    return struct.pack("!BBQ", 0x81, 127, n) + payload


ALSO = b'"also":{'
CONTROL = (b'{"type":"follow"', b'{"type":"unfollow"', b'{"type":"preferences"')


class Frame:
    """One event. `stream`/`seq` are set for stream events; 0 seq means not part of a stream.

    `also` maps the other streams of a notification sent to several, that take precedence
    (a session entitled to one of them shows it from there); `control` is the parsed event
    when it changes what the user's sessions follow (follow, unfollow, preferences)."""

    __slots__ = ("_ntype", "_sse", "_ws", "also", "body", "control", "seq", "stream")

    def __init__(self, body: bytes, stream: str = "", seq: int = 0) -> None:
        self.body = body
        self.stream = stream
        self.seq = seq
        self.also: dict[str, int] | None = None
        self.control: dict[str, Any] | None = None
        self._ws: bytes | None = None
        self._sse: bytes | None = None
        self._ntype: str | None = None

    @classmethod
    def of(cls, event: dict[str, Any]) -> Frame:
        return cls(orjson.dumps(event), event.get("stream", ""), event.get("seq", 0))

    @classmethod
    def event(cls, body: bytes, stream: str, seq: int) -> Frame:
        """A stream event from the store or the broker; looks for `also` before the embedded
        notification only (a quote inside a JSON string is escaped, so the raw key is ours)."""
        frame = cls(body, stream, seq)
        if body.find(ALSO, 0, max(body.find(b'"notification":'), 0)) >= 0:
            frame.also = orjson.loads(body)["also"]
        elif body.startswith(CONTROL):
            frame.control = orjson.loads(body)
        return frame

    @property
    def ntype(self) -> str:
        """The notification's type (parsed on first use: only sessions with muted types ask)."""
        if self._ntype is None:
            try:
                self._ntype = str(orjson.loads(self.body)["notification"]["type"])
            except (KeyError, TypeError, orjson.JSONDecodeError):
                self._ntype = ""
        return self._ntype

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
