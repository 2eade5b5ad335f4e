"""`GET /v1/sse`: Server-Sent Events. Each stream event's `id:` is the connection's cursor,
so a browser's automatic `Last-Event-ID` resumes exactly where it stopped; a detached stream
writes it as a head of its own, encoded when another stream moved, and the event's tail, the
same bytes for every connection (streams.py), so a broadcast encodes no cursor per connection.

The request is an ordinary FastAPI route (validation, authentication, the OpenAPI entry). With
Clarion's HTTP protocol (transports/http.py) the stream then leaves ASGI once its headers are
sent, as a detached WebSocket does: a `RawStream` writes each frame's shared SSE bytes to the
transport (one HTTP chunk per loop turn, transports/cork.py), the hub's slow-consumer rule
reads the transport's buffer, one timer wheel sends the heartbeats, and an idle stream holds
its session, this sink and the connection, no task and no request. On another ASGI server the
stream is a `StreamingResponse` over `SSESink`, with the same events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, ItemsView
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from clarion.api.deps import get_node, user
from clarion.auth import Principal
from clarion.domain import ClarionError, StoreUnavailable
from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session, TooManyConnections
from clarion.node import Node
from clarion.streams import cursor_head
from clarion.transports.cork import cork
from clarion.transports.deadlines import DEADLINES
from clarion.transports.http import ClarionHttpProtocol, RawConnection
from clarion.transports.keepalive import Keepalive
from clarion.transports.live import position_of, principal_of

router = APIRouter(prefix="/v1", tags=["live"])
log = logging.getLogger("clarion.sse")
HEARTBEAT = 15.0
TICKET_TTL = 30.0
EXPIRED = Frame(message("error", code="token_expired", message="token expired"))
RETRY = b"retry: 2000\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
PING = b": ping\n\n"
END = b"0\r\n\r\n"  # the last chunk of a chunked body


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk (uvicorn sent the headers with `transfer-encoding: chunked`)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


PING_CHUNK = chunk(PING)
NO_OTHERS: ItemsView[str, int] = {}.items()  # shared by every stream until its first event
_heartbeats: Keepalive | None = None


def heartbeats() -> Keepalive:
    """One wheel for every detached stream of this process (a timer per stream costs more)."""
    global _heartbeats
    if _heartbeats is None:
        _heartbeats = Keepalive(HEARTBEAT)
    return _heartbeats


class RawStream(RawConnection):
    """An SSE stream that left HTTP: the connection's protocol, the hub's sink and the
    heartbeat wheel's connection, in one small object."""

    __slots__ = (
        "expires",
        "head",
        "heard",
        "held",
        "hub",
        "limit",
        "lost",
        "moved",
        "others",
        "pending",
        "pinged",
        "session",
        "slot",
        "width",
    )
    via = "sse"  # the transport, as presence and the delivery log name it (main, after #14/#15)

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.hub = node.hub
        self.limit = node.settings.max_buffer
        self.pending: list[bytes] | None = None
        self.held = 0  # bytes in `pending`: past the limit they go out now, not at the flush
        self.session: Session | None = None
        self.expires = 0
        self.heard = self.pinged = self.lost = False
        self.slot: set[Any] | None = None
        # The `id:` line's head (`streams.cursor_head`): every stream's position but `moved`'s,
        # as they were (`others`, of `width` - 1 streams) when it was encoded.
        self.head = b""
        self.moved = ""
        self.others: ItemsView[str, int] = NO_OTHERS
        self.width = 0

    async def open(
        self,
        proto: ClarionHttpProtocol,
        send: Send,
        principal: Principal,
        position: dict[str, int],
        welcome: dict[str, Any],
    ) -> None:
        """Send the headers through ASGI, leave HTTP, then attach the session to the hub."""
        session = self.session
        assert session is not None
        headers = [(k.lower().encode(), v.encode()) for k, v in HEADERS.items()]
        headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": RETRY, "more_body": True})
        if proto.transport.is_closing():
            return
        proto.hand_over(self)
        # Pause at our own limit, so `drain()` waits exactly until the buffer is back under it.
        self.transport.set_write_buffer_limits(high=self.limit)
        heartbeats().add(self)
        self.expires = DEADLINES.add(self, principal.expires_at)
        try:
            await self.hub.attach(session, position, welcome)
        except Exception as exc:
            if not isinstance(exc, ClarionError):
                log.warning("an SSE stream could not attach: %r", exc)
            err = exc if isinstance(exc, ClarionError) else StoreUnavailable()
            self.close(0, err.code, Frame(message("error", code=err.code, message=err.message)))
        if self.lost:  # gone during the attach: undo what it registered after `gone`
            self.hub.detach(session)

    # -- the hub's sink ------------------------------------------------------------------------

    def send(self, frame: Frame, session: Session) -> bool:
        pending = self.pending
        if pending is None:
            if self.transport.get_write_buffer_size() > self.limit:
                return False
            pending = self.pending = []
            cork(self, at_once=not session.live)  # a handshake's burst waits for no spacing
        if frame.seq:
            position = session.position
            if not (
                frame.stream == self.moved
                and len(position) == self.width
                and position.items() >= self.others
            ):
                self.encode_head(frame.stream, position)
            head, sse = self.head, frame.sse_tail
            pending.append(head)
            self.held += len(head)
        else:
            sse = frame.sse
        pending.append(sse)
        self.held += len(sse)  # the chunk's size, at the flush
        if self.held > self.limit:  # a spaced flush must not hold more than the buffer
            self.write_pending()
        return True

    def encode_head(self, moved: str, position: dict[str, int]) -> None:
        """A new `id:` head: another stream moved since the last (a skipped event moves one
        too), or one was followed or left. Then each event on `moved` costs no encoding."""
        others = {s: q for s, q in position.items() if s != moved}
        self.others, self.width, self.moved = others.items(), len(others) + 1, moved
        self.head = b"id: " + cursor_head(others, moved)

    def write_pending(self) -> None:
        pending, self.pending = self.pending, None
        size, self.held = self.held, 0
        if pending and not self.transport.is_closing():
            self.transport.write(b"".join([b"%x\r\n" % size, *pending, b"\r\n"]))

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        """End the stream (`last` first): the client reconnects with its `Last-Event-ID`."""
        self.write_pending()
        if not self.transport.is_closing():
            self.transport.write((chunk(last.sse) if last is not None else b"") + END)
            self.transport.close()

    # -- the connection ------------------------------------------------------------------------

    def gone(self) -> None:
        self.lost = True
        heartbeats().remove(self)
        DEADLINES.remove(self, self.expires)
        session, self.session = self.session, None  # no session <-> sink cycle left to collect
        if session is not None:
            self.hub.detach(session)

    def shutdown(self) -> None:
        self.close(1012, "server restarting")

    def deadline(self) -> None:
        """The token expired: as a WebSocket closes with 4002, the stream ends with it."""
        self.close(0, "token expired", EXPIRED)

    def ping(self, frame: bytes) -> None:
        # A stream's client never answers: a lost one shows as a failed write or the write
        # timeout (RawConnection), so the wheel must not close it for silence.
        self.heard = True
        if self.pending is None and not self.transport.is_closing():
            self.transport.write(PING_CHUNK)

    def close_detached(self, code: int, reason: str) -> None:
        self.close(code, reason)


class Detached(Response):
    """A response that leaves HTTP once its headers are out (`RawStream.open`)."""

    def __init__(self, stream: RawStream, *args: Any) -> None:
        super().__init__(status_code=200)
        self.stream = stream
        self.args = args

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.stream.open(scope["extensions"]["clarion.http"], send, *self.args)


class SSESink:
    """A bounded byte queue drained by the response body."""

    via = "sse"  # the transport, as presence and the delivery log name it

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.ready = asyncio.Event()
        self.drained = asyncio.Event()
        self.closed = False

    def send(self, frame: Frame, session: Session) -> bool:
        if self.closed:
            return True
        if self.size > self.limit:
            return False
        chunk = frame.sse
        if frame.seq:
            chunk = b"id: " + session.cursor.encode() + b"\n" + chunk
        self.chunks.append(chunk)
        self.size += len(chunk)
        self.ready.set()
        return True

    async def drain(self) -> None:
        if self.size > self.limit and not self.closed:
            self.drained.clear()
            await self.drained.wait()

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        if last is not None and not self.closed:
            self.chunks.append(last.sse)
        self.closed = True
        self.ready.set()
        self.drained.set()


def _failed(attach: asyncio.Future[Any], sink: SSESink) -> None:
    """Attaching failed (store down, connection cap): the stream says why and ends."""
    if attach.cancelled() or attach.exception() is None:
        return
    exc = attach.exception()
    if not isinstance(exc, ClarionError):
        log.warning("an SSE stream could not attach: %r", exc)
    err = exc if isinstance(exc, ClarionError) else StoreUnavailable()
    sink.close(0, err.code, Frame(message("error", code=err.code, message=err.message)))


@router.post("/tickets")
async def create_ticket(
    me: Principal = Depends(user), node: Node = Depends(get_node)
) -> dict[str, object]:
    """A single-use ticket, valid 30 s, for `GET /v1/sse?ticket=` (EventSource sends no headers)."""
    claims = {
        "sub": me.user,
        "roles": list(me.roles),
        "topics": list(me.topics),
        "exp": me.expires_at,
    }
    ticket = await node.store.create_ticket(me.user, claims, TICKET_TTL)
    return {"ticket": ticket, "expires_in": TICKET_TTL}


@router.get("/sse", response_class=StreamingResponse)
async def sse(
    request: Request,
    ticket: Annotated[str | None, Query(max_length=100, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    since: Annotated[str | None, Query(max_length=8192)] = None,
    node: Node = Depends(get_node),
) -> StreamingResponse:
    """The live event stream; see docs/protocol.md."""
    principal = await principal_of(request, node, ticket)
    position = position_of(request.headers.get("last-event-id") or since)
    if node.hub.per_user.get(principal.user, 0) >= node.hub.max_per_user:
        raise TooManyConnections(node.hub.max_per_user)  # before the 200; attach checks again
    proto = request.scope.get("extensions", {}).get("clarion.http")
    if isinstance(proto, ClarionHttpProtocol):
        raw = RawStream(node)
        session = raw.session = Session(principal.user, node.streams_of(principal), raw)
        return Detached(raw, principal, position, _welcome(principal, session))  # type: ignore[return-value]
    sink = SSESink(node.settings.max_buffer)
    session = Session(principal.user, node.streams_of(principal), sink)

    async def body() -> AsyncIterator[bytes]:
        welcome = _welcome(principal, session)
        attach = asyncio.ensure_future(node.hub.attach(session, position, welcome))
        attach.add_done_callback(lambda task: _failed(task, sink))
        try:
            yield RETRY
            while True:
                left = principal.expires_at - time.time()
                if left <= 0:  # as a WebSocket closes with 4002: the stream ends with its token
                    yield EXPIRED.sse
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sink.ready.wait(), min(HEARTBEAT, left))
                sink.ready.clear()
                if not sink.chunks:
                    if sink.closed:
                        return
                    if time.time() < principal.expires_at:
                        yield b": ping\n\n"
                    continue
                chunks = list(sink.chunks)
                sink.chunks.clear()
                sink.size = 0
                sink.drained.set()
                yield b"".join(chunks)
                if sink.closed:
                    return
        finally:
            attach.cancel()
            node.hub.detach(session)

    return StreamingResponse(body(), media_type="text/event-stream", headers=HEADERS)


def _welcome(principal: Principal, session: Session) -> dict[str, Any]:
    return {
        "user": principal.user,
        "streams": session.streams,
        "heartbeat": HEARTBEAT,
        "expires_at": principal.expires_at,
    }
