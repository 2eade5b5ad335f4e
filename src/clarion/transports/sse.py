"""`GET /v1/sse`: Server-Sent Events. Each stream event's `id:` is the connection's cursor,
so a browser's automatic `Last-Event-ID` resumes exactly where it stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import StreamingResponse

from clarion.api.deps import get_node, user
from clarion.auth import Principal
from clarion.domain import ClarionError, StoreUnavailable
from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session, TooManyConnections
from clarion.node import Node
from clarion.transports.live import position_of, principal_of

router = APIRouter(prefix="/v1", tags=["live"])
log = logging.getLogger("clarion.sse")
HEARTBEAT = 15.0
TICKET_TTL = 30.0
EXPIRED = Frame(message("error", code="token_expired", message="token expired"))


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
    sink = SSESink(node.settings.max_buffer)
    session = Session(principal.user, node.streams_of(principal), sink)

    async def body() -> AsyncIterator[bytes]:
        welcome = {
            "user": principal.user,
            "streams": session.streams,
            "heartbeat": HEARTBEAT,
            "expires_at": principal.expires_at,
        }
        attach = asyncio.ensure_future(node.hub.attach(session, position, welcome))
        attach.add_done_callback(lambda task: _failed(task, sink))
        try:
            yield b"retry: 2000\n\n"
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

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)
