"""uvicorn's WebSocket protocol, extended so a live connection costs little and sends fast.

Two things the ASGI interface cannot do cheaply, and why they matter here:
- Writes: the ASGI `send()` path re-frames and awaits per message (tens of microseconds). The
  hub instead writes one shared, already-framed buffer to each socket's transport.
- Memory: an ASGI WebSocket keeps a task and a dozen coroutine frames of middleware alive for
  the connection's whole life. After authentication the endpoint *detaches*: it hands the
  connection to callbacks and returns, and the protocol drops the ASGI state.
- Keepalive: uvicorn pings from timers of each connection; a detached connection is pinged by
  one timer wheel instead (transports/keepalive.py), so `clarion serve` turns uvicorn's off.
The endpoint detaches right after the upgrade, so even a socket that has not sent its `auth`
frame yet holds no task. The protocol advertises itself as the `clarion.raw` scope extension;
without it (another ASGI server) the endpoint stays on the plain ASGI path. Pinned to the
uvicorn versions in pyproject.toml, since it builds on uvicorn's `websockets_sansio_impl`.

This is now the path of upgrades the HTTP protocol does not answer itself (a `root_path`,
another HTTP protocol): `/v1/ws` through Clarion's HTTP protocol leaves uvicorn's WebSocket
protocol out entirely (transports/rawws.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from clarion.transports.keepalive import Keepalive

TextHandler = Callable[[str], None]
GoneHandler = Callable[[], None]


class _NoQueue:
    """Stands in for the ASGI receive queue once detached: uvicorn still posts to it."""

    def put_nowait(self, item: object) -> None:
        pass

    def empty(self) -> bool:
        return True


_NO_QUEUE = _NoQueue()
_ALWAYS_WRITABLE = asyncio.Event()
_ALWAYS_WRITABLE.set()


class ClarionWebSocketProtocol(WebSocketsSansIOProtocol):
    on_text: TextHandler | None = None
    on_gone: GoneHandler | None = None
    keepalive: Keepalive | None = None
    slot: set[Any] | None = None
    heard = pinged = False

    def data_received(self, data: bytes) -> None:
        self.heard = True  # anything from the peer answers the keepalive ping
        super().data_received(data)

    def ping(self, frame: bytes) -> None:
        if not (self.close_sent or self.transport.is_closing()):
            self.transport.write(frame)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"]["clarion.raw"] = self

    def detach(self, on_text: TextHandler, on_gone: GoneHandler, keepalive: Keepalive) -> None:
        """From now on frames go to `on_text` and the end of the connection to `on_gone`;
        `keepalive` pings it."""
        self.on_text, self.on_gone = on_text, on_gone
        self.keepalive = keepalive
        keepalive.add(self)
        pending = []
        while not self.queue.empty():
            pending.append(self.queue.get_nowait())
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        # Drop the ASGI state: about 4 KB a connection, most of it the receive queue's deques,
        # and the request headers (2 KB), which websockets' parser keeps referenced.
        if self.request is not None:
            self.request.headers.clear()
        self.scope = None  # type: ignore[assignment]
        self.request = self.response = None  # type: ignore[assignment]
        self.queue = _NO_QUEUE  # type: ignore[assignment]
        for msg in pending:
            if msg["type"] == "websocket.disconnect":
                self._gone()
                return
            if msg["type"] == "websocket.receive":
                on_text(msg.get("text") or (msg.get("bytes") or b"").decode("utf-8", "replace"))

    async def drain(self) -> None:
        """Until the transport's buffer is back under its high-water mark."""
        await self.writable.wait()

    def rebind(self, on_text: TextHandler, on_gone: GoneHandler) -> None:
        """Hand a detached connection to new callbacks (authenticated: to its live socket)."""
        if self.on_gone is not None:
            self.on_text, self.on_gone = on_text, on_gone
            # The replay (which waits on `writable`) is over: the hub checks the buffer size
            # itself from now on.
            self.writable = _ALWAYS_WRITABLE

    def pause_writing(self) -> None:
        if self.writable is not _ALWAYS_WRITABLE:
            super().pause_writing()

    def resume_writing(self) -> None:
        if self.writable is not _ALWAYS_WRITABLE:
            super().resume_writing()

    def send_receive_event_to_app(self) -> None:
        if self.on_text is None:
            super().send_receive_event_to_app()
            return
        data = self.frames[0] if len(self.frames) == 1 else b"".join(self.frames)
        self.frames = []
        if not self.close_sent:
            self.on_text(bytes(data).decode("utf-8", "replace"))

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._gone()

    def _gone(self) -> None:
        if self.keepalive is not None:
            self.keepalive.remove(self)
        gone, self.on_gone = self.on_gone, None
        if gone is not None:
            # Break the protocol -> socket -> sink -> protocol cycle, so a closed connection is
            # freed by reference counting at once, not by the next full collection (which the
            # GC tuning in app.py makes rare). So is websockets' own: its protocol and the
            # parser generator whose frame holds it (with the read buffer and the frames),
            # closed here; a frozen connection's cycle otherwise waited for the complete
            # collection, minutes, and each reconnect wave added to memory until then.
            self.on_text = None
            self.conn.parser.close()
            gone()

    def close_detached(self, code: int, reason: str) -> None:
        """Start the closing handshake without the ASGI `send()`."""
        if self.close_sent or self.transport.is_closing():
            return
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.close)

    async def run_asgi(self) -> None:
        """As uvicorn's, except that a detached connection stays open when the app returns."""
        try:
            await self.app(self.scope, self.receive, self.send)
        except ClientDisconnected:
            pass
        except BaseException:
            self.logger.exception("Exception in ASGI application\n")
            self.send_500_response()
        if not self.handshake_complete:
            self.send_500_response()
        if self.on_text is None and self.close_timer is None:
            self.transport.close()
