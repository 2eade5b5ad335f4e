"""uvicorn's httptools protocol with a bounded request head and a write timeout.

httptools accumulates a header's value across reads (`value += more`) and hands it over only
once complete, so without a bound one request can make the server hold megabytes of
`Authorization` (and copy them at each read). Here the bytes of an unfinished head are counted
as they arrive, and the finished head's size and header count are checked exactly; a request
over either limit is answered 431 and its connection closed, before any application code runs.

A client that stops reading (an SSE stream's, above all) makes the response wait on a full
socket buffer, holding what was queued for it. Once writing has been paused for
`CLARION_WRITE_TIMEOUT` seconds the connection is aborted: the stream's end frees everything,
and the client, if it is still there, reconnects with its cursor.

A response may also *leave HTTP* (`hand_over`): an SSE stream after its headers, a long-poll
while it waits. The protocol advertises itself as the `clarion.http` scope extension; the
endpoint sends its headers through the middleware as usual (or captures them, `head`), hands the
transport to a `RawConnection` of its own and returns: the request's task, scope, middleware
frames, and this protocol object with its parser and buffers are freed, as a WebSocket leaves
them at its upgrade. The connection's owner writes the body to the transport itself
(pre-framed, shared bytes) and hears of the connection's end (`gone`); a long-poll gives the
connection back to HTTP (`RawConnection.resume_http`) for its next request. Without the
extension (another ASGI server) the endpoints keep their plain ASGI path.

Long-polls are started a bounded number at a time (`Slots`, `CLARION_MAX_HANDSHAKES`): a poll
storm (thousands of clients re-polling at once) would otherwise run thousands of FastAPI
handlers at once, each holding its request, scope, middleware frames and store reads (~30 KB)
before it can leave HTTP to wait. A poll beyond the bound waits as its parsed head (this
protocol and uvicorn's request cycle, no task) and starts when a running one leaves the app.

The limits are read from the environment once per process (`CLARION_*`, as the app does), so
the class is importable by name in worker processes.
"""

from __future__ import annotations

import asyncio
import functools
from collections import OrderedDict
from typing import Any, NamedTuple

import orjson
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)

from clarion.config import Settings
from clarion.transports.header_timeout import HeaderTimeoutProtocol

MAX_HEADERS = 100  # header lines per request; browsers send about 20
# The lifespan state's key for the callable that takes a WebSocket upgrade of its own path
# (`Door.upgrade` in transports/websocket.py) straight from the HTTP parse.
UPGRADE = "clarion.upgrade"
# ... and for the callable that picks the app to run for a request (`FastPublish.take` in
# api/lean.py, `FastInbox.take` in api/lean_inbox.py: a plain publish and the inbox's hot
# calls are answered without the ASGI middleware).
FAST = "clarion.fast"
# ... and for the `Slots` that bound the long-polls running in the app at once.
SLOTS = "clarion.slots"
POLL = ("GET", "/v1/poll")


@functools.cache
def limits() -> tuple[int, float]:
    """(max head bytes, write timeout), from this process's settings."""
    settings = Settings()
    return settings.max_header_bytes, settings.write_timeout


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class _Capture:
    """Takes the bytes of a response head instead of the socket (`ClarionHttpProtocol.head`)."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return False


class Slots:
    """The requests of one kind (`POLL`) the app runs at once; the others wait, in arrival
    order, as the parsed heads their protocols hold, and start as running ones return."""

    def __init__(self, limit: int, kind: tuple[str, str] = POLL) -> None:
        self.limit = max(1, limit)
        self.kind = kind
        self.busy = 0
        self.peak = 0  # the most ever running at once (metrics: the bound held)
        self.waited = 0  # requests that had to wait for a slot
        self.waiting: OrderedDict[ClarionHttpProtocol, tuple[Any, Any]] = OrderedDict()

    def covers(self, scope: Any) -> bool:
        path = scope["path"][len(scope.get("root_path", "")) :]
        return (scope["method"], path) == self.kind

    def take(self) -> bool:
        """A slot now, or False: the request must `wait`."""
        if self.busy >= self.limit:
            return False
        self.busy += 1
        self.peak = max(self.peak, self.busy)
        return True

    def wait(self, proto: ClarionHttpProtocol, cycle: Any, app: Any) -> None:
        self.waited += 1
        self.waiting[proto] = (cycle, app)

    def forget(self, proto: ClarionHttpProtocol) -> None:
        """The connection of a waiting request is gone: it never starts."""
        self.waiting.pop(proto, None)

    def give_back(self) -> None:
        """A request left the app: its slot goes to the first one waiting, if any."""
        self.busy -= 1
        while self.waiting:
            proto, (cycle, app) = self.waiting.popitem(last=False)
            if not proto.transport.is_closing():
                self.busy += 1
                proto.start_in_slot(cycle, app, self)
                return

    def held(self, app: Any) -> Any:
        """`app`, giving its slot back when it returns (answered, left HTTP, or failed)."""

        async def run(scope: Scope, receive: Receive, send: Send) -> None:
            try:
                await app(scope, receive, send)
            finally:
                self.give_back()

        return run


class Origin(NamedTuple):
    """What makes an HTTP protocol for a connection coming back: the same for every
    connection of a server, so a `RawConnection` holds one shared reference, not the protocol."""

    protocol: type[ClarionHttpProtocol]
    config: Any
    server_state: Any
    app_state: dict[str, Any]


_origins: dict[int, Origin] = {}


def _plain_length(names: list[bytes]) -> bool:
    """A response uvicorn would write with its length as given: one `content-length`, no
    `transfer-encoding`, no `connection` header of the app's."""
    return (
        names.count(b"content-length") == 1
        and b"transfer-encoding" not in names
        and b"connection" not in names
    )


async def respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes | memoryview
) -> None:
    """A whole response, `Content-Length` among `headers`, written as uvicorn's `send` writes
    `http.response.start` then `http.response.body` (its default headers first, the same
    checks of names and values, `connection: close` when the connection will not be kept),
    but in one write: one `send(2)` a response instead of two, and none of the per-message
    work. A `send` that is not uvicorn's httptools cycle (or one logging its own access
    lines), or any other shape of response, gets the two messages."""
    cycle: Any = getattr(send, "__self__", None)
    plain = type(cycle) is RequestResponseCycle and not cycle.access_log
    every = [*cycle.default_headers, *headers] if plain else []
    names = [name.lower() for name, _ in every]
    if not plain or cycle.response_started or not _plain_length(names):
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    # uvicorn checks each name and value; joined, two searches do the same (a name holds none
    # of HEADER_RE's characters, a value none of HEADER_VALUE_RE's, and tab is allowed).
    if HEADER_RE.search(b"".join(names)):
        raise RuntimeError("Invalid HTTP header name.")
    if HEADER_VALUE_RE.search(b"\t".join(value for _, value in every)):
        raise RuntimeError("Invalid HTTP header value.")
    if int(every[names.index(b"content-length")][1]) != len(body):
        raise RuntimeError("Response content length differs from Content-Length")
    if cycle.flow.write_paused and not cycle.disconnected:
        await cycle.flow.drain()
    if cycle.disconnected:
        return
    cycle.response_started = True
    cycle.waiting_for_100_continue = False
    cycle.chunked_encoding = False
    content: list[bytes | memoryview] = [STATUS_LINE[status]]
    for name, (_, value) in zip(names, every, strict=True):
        content += (name, b": ", value, b"\r\n")
    if not cycle.keep_alive:
        content.append(b"connection: close\r\n")
    content += (b"\r\n", body)
    cycle.transport.write(b"".join(content))
    cycle.response_complete = True
    cycle.message_event.set()
    if not cycle.keep_alive:
        cycle.transport.close()
    cycle.on_response()


class RawConnection(asyncio.Protocol):
    """A connection that left HTTP: the transport, the write timeout, and a way back.

    Subclasses hold their own state in slots; what uvicorn needs of a connection (`shutdown`,
    a place in its set of connections, so a graceful stop waits for it) is kept here.
    """

    __slots__ = ("keep_alive", "origin", "stalled", "transport", "writable")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.origin: Origin | None = None
        self.keep_alive = False
        self.stalled: asyncio.TimerHandle | None = None
        self.writable: asyncio.Future[None] | None = None  # made only when someone waits

    # -- what a subclass provides
    def gone(self) -> None:
        """The connection is lost."""

    def shutdown(self) -> None:
        """The server is stopping: end the response now."""
        self.transport.close()

    # -- asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        """Ignored: nothing is pipelined behind a stream or a waiting long-poll."""

    def eof_received(self) -> bool | None:
        return None  # the client is gone: close

    def pause_writing(self) -> None:
        if self.stalled is None:
            _, timeout = limits()
            self.stalled = asyncio.get_running_loop().call_later(timeout, self.transport.abort)

    def resume_writing(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        writable, self.writable = self.writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    async def drain(self) -> None:
        """Until the transport's buffer is back under its high-water mark."""
        if self.stalled is not None:
            if self.writable is None:
                self.writable = asyncio.get_running_loop().create_future()
            await asyncio.shield(self.writable)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.origin is not None:
            self.origin.server_state.connections.discard(self)
        self.resume_writing()
        self.gone()

    def resume_http(self) -> None:
        """The response is complete: back to HTTP for the connection's next request, with a
        new protocol (keep-alive), or close."""
        origin, self.origin = self.origin, None
        if origin is None or self.transport.is_closing():
            return
        origin.server_state.connections.discard(self)
        if not self.keep_alive:
            self.transport.close()
            return
        self.resume_writing()
        proto = origin.protocol(
            config=origin.config, server_state=origin.server_state, app_state=origin.app_state
        )
        proto.connection_made(self.transport)
        self.transport.set_protocol(proto)
        proto.on_response_complete()  # the keep-alive timer, as after any response


class ClarionHttpProtocol(HeaderTimeoutProtocol):
    """Bounded heads and the write timeout, over the deadline on heads (slowloris)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head, self.write_timeout = limits()
        self.stalled: asyncio.TimerHandle | None = None
        self.in_head = True  # the next bytes belong to a request head
        self.head_bytes = 0
        self.head_refused = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = {"clarion.http": self}  # type: ignore[dict-item]

    def hand_over(self, conn: RawConnection) -> None:
        """The connection leaves HTTP for `conn` (the response's headers are out or captured):
        uvicorn's task for the request ends quietly when the app returns, and this protocol,
        its parser and buffers are freed with the request."""
        cycle = self.cycle
        conn.keep_alive = cycle.keep_alive
        cycle.response_complete = True  # uvicorn neither logs nor closes when the app returns
        origin = _origins.get(id(self.server_state))
        if origin is None:
            origin = Origin(type(self), self.config, self.server_state, self.app_state)
            _origins[id(self.server_state)] = origin
        conn.transport, conn.origin = self.transport, origin
        self._stop_head_timer()
        self._unstall()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        self.connections.add(conn)  # type: ignore[arg-type]  # a graceful stop waits for it
        if self.flow.read_paused:
            self.transport.resume_reading()
        self.transport.set_protocol(conn)
        self.parser = None  # type: ignore[assignment]  # parser <-> protocol: no cycle left
        # Nor protocol -> request cycle -> scope -> `clarion.http` -> protocol: the scope is
        # shared (the request cycle, the endpoint's Request), so the name goes from it.
        self.scope["extensions"].pop("clarion.http", None)
        self.scope = None  # type: ignore[assignment]

    async def head(self, send: Send, start: Message) -> bytes:
        """The head the middleware and uvicorn would write for `start`, captured: a long-poll
        writes it with its answer, so a store error at the end can still change the status."""
        cycle = self.cycle
        transport, cycle.transport = cycle.transport, _Capture()  # type: ignore[assignment]
        try:
            await send(start)
            return cycle.transport.data  # type: ignore[attr-defined, no-any-return]
        finally:
            cycle.transport = transport

    def handle_websocket_upgrade(self) -> None:
        """An upgrade the app takes itself (`UPGRADE` in the lifespan state) leaves here with
        the headers parsed once; any other goes through uvicorn's WebSocket protocol and the
        ASGI app. Either way this protocol then lets go of its parser and its scope (each
        holds it: the parser's callbacks, `clarion.http`), so that a WebSocket's HTTP side is
        freed by reference counting once upgraded, not by the complete collection minutes
        later (the GC tuning in app.py froze it)."""
        take = self.app_state.get(UPGRADE)
        if take is None or not take(self):
            super().handle_websocket_upgrade()
            self._stop_head_timer()
            self._unstall()
            self.parser = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]  # its extensions hold this protocol

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """uvicorn's start of a request (pipelined ones too), with the app `FAST` picks: the
        task, its tracking and its error handling (`run_asgi`) stay uvicorn's. Not when
        uvicorn put its own answer in (`limit_concurrency`'s 503)."""
        if app is self.app:
            slots: Slots | None = self.app_state.get(SLOTS)
            if slots is not None and slots.covers(cycle.scope):
                if slots.take():
                    self.start_in_slot(cycle, app, slots)
                else:  # its client's close is still heard (`connection_lost`) while it waits
                    slots.wait(self, cycle, app)
                return
            take = self.app_state.get(FAST)
            if take is not None:
                app = take(cycle.scope, app)
        super()._start_asgi_task(cycle, app)

    def start_in_slot(self, cycle: Any, app: Any, slots: Slots) -> None:
        """Run a request that holds one of `slots` (given back when the app returns)."""
        super()._start_asgi_task(cycle, slots.held(app))

    def leave_for(self, proto: asyncio.Protocol) -> None:
        """The connection leaves HTTP for `proto` after an upgrade: this protocol's timers,
        its place among the server's connections and its parser (a cycle) go."""
        self._stop_head_timer()
        self._unstall()
        self._unset_keepalive_if_required()
        self.connections.discard(self)
        if self.flow.read_paused:
            self.transport.resume_reading()
        self.transport.set_protocol(proto)
        self.parser = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head_refused:
            return
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.in_head and self.head_bytes > self.max_head and not self.head_refused:
            self._refuse()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_head:
            self.head_refused = True
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if len(self.headers) > MAX_HEADERS or size > self.max_head:
            self.head_refused = True
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes = True, 0

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stalled is None:
            self.stalled = self.loop.call_later(self.write_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        slots: Slots | None = self.app_state.get(SLOTS)
        if slots is not None and slots.waiting:
            slots.forget(self)
        super().connection_lost(exc)
        # This protocol -> its last request's scope (itself and through the request's cycle)
        # -> `clarion.http` -> this protocol: without this, every closed connection would be
        # left to the collector, and a long-lived one (frozen by the GC tuning, app.py) to the
        # complete collection. A request still running holds its cycle and scope itself;
        # uvicorn reads them only here, above.
        self.cycle = None  # type: ignore[assignment]
        self.scope = None  # type: ignore[assignment]

    def _unstall(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is also where a callback's refusal ends."""
        if self.head_refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self.head_refused = True
        if self.transport.is_closing():
            return
        message = f"request headers over {self.max_head} bytes or {MAX_HEADERS} lines; send less"
        body = orjson.dumps(
            {"error": {"code": "headers_too_large", "message": message, "field": None}}
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
