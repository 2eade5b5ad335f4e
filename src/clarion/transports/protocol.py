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
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from uvicorn.protocols.utils import ClientDisconnected
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State
from websockets.server import ServerProtocol

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
_LOG = logging.getLogger("uvicorn.error")
_ALWAYS_WRITABLE = asyncio.Event()
_ALWAYS_WRITABLE.set()


class ClarionWebSocketProtocol(WebSocketsSansIOProtocol):
    on_text: TextHandler | None = None
    on_gone: GoneHandler | None = None
    keepalive: Keepalive | None = None
    slot: set[Any] | None = None
    heard = pinged = False

    @classmethod
    def opened(cls, http: Any) -> ClarionWebSocketProtocol:
        """The protocol for a connection whose handshake the HTTP protocol `http` answered
        itself (transports/upgrade.py): open from the start, its `websockets` state machine
        parsing frames only, no request, scope or ASGI task. The caller switches the
        transport to it and detaches it.

        uvicorn's `__init__` is not run: it makes a `websockets` protocol waiting for a
        request, whose parser (a started generator) would only be thrown away, and an ASGI
        receive queue that `detach` drops. What it sets and the methods used here read is set
        below, from the same config (the uvicorn version is pinned in pyproject.toml)."""
        self = cls.__new__(cls)
        config = http.config
        self.config, self.app, self.loop = config, config.loaded_app, http.loop
        self.logger = http.logger
        self.root_path, self.asgi_version = config.root_path, config.asgi_version
        self.app_state = http.app_state
        state = http.server_state
        self.connections, self.tasks = state.connections, state.tasks
        self.default_headers = state.default_headers
        self.conn = ServerProtocol(state=State.OPEN, max_size=config.ws_max_size, logger=_LOG)
        # As `connection_made`, with the addresses the HTTP protocol already looked up.
        self.transport = http.transport
        self.server, self.client = http.server, http.client
        self.scheme = "wss" if http.scheme == "https" else "ws"
        self.connections.add(self)
        self.queue = _NO_QUEUE  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]
        self.request = self.response = None  # type: ignore[assignment]
        self.handshake_initiated = self.handshake_complete = True
        self.close_sent = self.disconnected = False
        self.close_timer = None
        self.close_timeout = 10.0
        self.initial_response = None
        self.read_paused = False
        self.writable = asyncio.Event()
        self.writable.set()
        self.ping_interval = self.ping_timeout = None  # the keepalive wheel pings instead
        self.ping_timer = self.pong_timer = None
        self.pending_ping_payload = None
        self.ping_sent_at = self.last_ping_rtt = 0.0
        self.frames = []
        self.curr_msg_data_type = "text"
        return self

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
