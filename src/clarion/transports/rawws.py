"""A WebSocket after the handshake, as one slotted asyncio protocol of Clarion's own.

The raw upgrade (transports/upgrade.py, `Door.upgrade`) answers the handshake from the HTTP
parse; from then on the connection needs only this: read client frames (transports/wsframes.py),
answer pings and close frames, send the close handshake, tell the keepalive wheel it heard from
the peer, and pause the replay when the socket's buffer is full. uvicorn's WebSocket protocol
would add an instance dict of some 40 attributes and `websockets`' sans-I/O connection with its
parser generator (4-5 KB an idle connection, docs/benchmarks.md); an idle socket here is this
object (16 slots), the bytes of an unfinished frame if any, and the transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from clarion.transports.keepalive import Keepalive
from clarion.transports.wsframes import (
    BINARY,
    CLOSE,
    PING,
    PONG,
    TEXT,
    Failure,
    close_frame,
    control_frame,
    parse,
)

TextHandler = Callable[[str], None]
GoneHandler = Callable[[], None]
CLOSE_TIMEOUT = 10.0  # for the client's answer to our close frame, as uvicorn waits


class RawWebSocket(asyncio.Protocol):
    """An open WebSocket: frames to `on_text`, its end to `on_gone` (set by `detach`)."""

    __slots__ = (
        "buffer",
        "close_sent",
        "close_timer",
        "connections",
        "failed",
        "heard",
        "keepalive",
        "max_size",
        "on_gone",
        "on_text",
        "parts",
        "paused",
        "pinged",
        "slot",
        "transport",
        "waiter",
    )

    def __init__(self, transport: Any, connections: set[Any], max_size: int) -> None:
        self.transport: asyncio.Transport = transport
        self.connections = connections  # the server's: a graceful stop waits for this one
        self.max_size = max_size
        self.buffer = b""  # the start of a frame not complete yet
        self.parts: list[bytes] | None = None  # a fragmented message's frames so far
        self.on_text: TextHandler | None = None
        self.on_gone: GoneHandler | None = None
        self.keepalive: Keepalive | None = None
        self.slot: set[Any] | None = None  # the keepalive wheel's bucket
        self.heard = self.pinged = self.close_sent = self.paused = self.failed = False
        self.close_timer: asyncio.TimerHandle | None = None
        self.waiter: asyncio.Future[None] | None = None  # made only when someone drains
        connections.add(self)

    @classmethod
    def opened(cls, http: Any) -> RawWebSocket:
        """The protocol for a connection whose handshake the HTTP protocol `http` answered; the
        caller switches the transport to it (`http.leave_for`)."""
        return cls(http.transport, http.server_state.connections, http.config.ws_max_size)

    # -- what the WebSocket endpoint uses (transports/websocket.py)

    def detach(self, on_text: TextHandler, on_gone: GoneHandler, keepalive: Keepalive) -> None:
        """From now on messages go to `on_text` and the end of the connection to `on_gone`;
        `keepalive` pings it."""
        self.on_text, self.on_gone = on_text, on_gone
        self.keepalive = keepalive
        keepalive.add(self)

    def rebind(self, on_text: TextHandler, on_gone: GoneHandler) -> None:
        """Hand the connection to new callbacks (authenticated: to its live socket)."""
        if self.on_gone is not None:
            self.on_text, self.on_gone = on_text, on_gone

    def close_detached(self, code: int, reason: str) -> None:
        """Start the closing handshake; the transport closes at the client's answer, or after
        `CLOSE_TIMEOUT`."""
        if self.close_sent or self.transport.is_closing():
            return
        self.transport.write(close_frame(code, reason))
        self.close_sent = True
        self.close_timer = asyncio.get_running_loop().call_later(
            CLOSE_TIMEOUT, self.transport.close
        )

    def ping(self, frame: bytes) -> None:
        """The keepalive wheel's ping (one shared frame for every socket)."""
        if not (self.close_sent or self.transport.is_closing()):
            self.transport.write(frame)

    async def drain(self) -> None:
        """Until the transport's buffer is back under its high-water mark."""
        if self.paused:
            if self.waiter is None:
                self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.waiter)

    def shutdown(self) -> None:
        """The server stops (uvicorn calls this on each of its connections)."""
        if not (self.close_sent or self.transport.is_closing()):
            self.transport.write(close_frame(1012))
            self.close_sent = True
        self.transport.close()

    # -- asyncio.Protocol

    def data_received(self, data: bytes) -> None:
        self.heard = True  # anything from the peer answers the keepalive ping
        if self.failed:
            return  # after a protocol error: read and drop until the client's EOF
        buf = self.buffer + data if self.buffer else data
        try:
            events, self.buffer, self.parts = parse(buf, self.parts, self.max_size)
        except Failure as exc:
            self.buffer, self.parts = b"", None
            self._fail(exc.code, exc.reason)
            return
        for event in events:
            if event.opcode == TEXT or event.opcode == BINARY:
                on_text = self.on_text
                if on_text is not None and not self.close_sent:
                    text = event.data
                    on_text(text if isinstance(text, str) else text.decode("utf-8", "replace"))
            elif event.opcode == PING:
                if not (self.close_sent or self.transport.is_closing()):
                    self.transport.write(control_frame(PONG, event.data))  # type: ignore[arg-type]
            elif event.opcode == CLOSE:
                self._closed_by_peer(event.data)  # type: ignore[arg-type]
            # PONG: `heard` is all it means

    def eof_received(self) -> bool | None:
        return None  # the client is gone: close

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        if self.close_timer is not None:
            self.close_timer.cancel()
            self.close_timer = None
        self.resume_writing()  # a drain waiting on a lost transport would wait forever
        if self.keepalive is not None:
            self.keepalive.remove(self)
        # Drop the callbacks: no protocol -> socket -> sink -> protocol cycle outlives the
        # connection, so it is freed by reference counting at once (the GC tuning in app.py
        # makes full collections rare).
        gone, self.on_gone, self.on_text = self.on_gone, None, None
        if gone is not None:
            gone()

    # -- the closing handshake

    def _closed_by_peer(self, payload: bytes) -> None:
        if self.close_sent:  # the answer to ours: done
            self.transport.close()
            return
        if not self.transport.is_closing():
            self.transport.write(control_frame(CLOSE, payload))  # echo its code (RFC 6455 5.5.1)
            self.close_sent = True
            self.transport.close()

    def _fail(self, code: int, reason: str) -> None:
        """A protocol error: say why, stop reading frames, and end our side (RFC 6455 7.1.7).
        The socket is closed at the client's EOF (or after `CLOSE_TIMEOUT`), not at once: closing
        it with the rest of a refused frame unread would reset the connection, and the client
        could lose the close frame that says why."""
        self.failed = True
        transport = self.transport
        if transport.is_closing():
            return
        if not self.close_sent:
            transport.write(close_frame(code, reason))
            self.close_sent = True
        if self.close_timer is None:
            self.close_timer = asyncio.get_running_loop().call_later(CLOSE_TIMEOUT, transport.close)
        if transport.can_write_eof():
            transport.write_eof()
        else:
            transport.close()
