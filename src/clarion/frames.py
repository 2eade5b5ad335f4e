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


class Frame:
    """One event. `stream`/`seq` are set for stream events; 0 seq means not part of a stream."""

    __slots__ = ("_sse", "_ws", "body", "seq", "stream")

    def __init__(self, body: bytes, stream: str = "", seq: int = 0) -> None:
        self.body = body
        self.stream = stream
        self.seq = seq
        self._ws: bytes | None = None
        self._sse: bytes | None = None

    @classmethod
    def of(cls, event: dict[str, Any]) -> Frame:
        return cls(orjson.dumps(event), event.get("stream", ""), event.get("seq", 0))

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
