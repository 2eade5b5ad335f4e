"""`GET /v1/poll`: long-polling, for networks where neither WebSocket nor SSE gets through.

A poll that finds events answers at once. One that must wait, with Clarion's HTTP protocol
(transports/http.py), leaves HTTP while it waits: its response head is captured through the
middleware (CORS, security headers), the request's task and scope end, and a `WaitingPoll`
(the connection's protocol and the hub's sink) holds the session until an event, its timeout
(transports/deadlines.py) or a shutdown; it then writes the head and the answer and gives the
connection back to HTTP for the next poll. On another ASGI server the request waits in ASGI.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send
from uvicorn.protocols.http.httptools_impl import STATUS_LINE

from clarion.api.deps import get_node
from clarion.domain import ClarionError, StoreUnavailable
from clarion.frames import Frame
from clarion.hub import Hub, Session
from clarion.node import Node
from clarion.responses import JSON
from clarion.streams import encode_cursor
from clarion.tasks import spawn
from clarion.transports.deadlines import DEADLINES
from clarion.transports.http import ClarionHttpProtocol, RawConnection
from clarion.transports.live import position_of, principal_of

router = APIRouter(prefix="/v1", tags=["live"])
MAX_EVENTS = 500
GATHER = 0.02  # after the first live event, wait this long for more to batch them
HEAD: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"application/json")],
}


class PollSink:
    via = "poll"  # the transport, as presence and the delivery log name it

    def __init__(self) -> None:
        self.events: list[Frame] = []
        self.arrived = asyncio.Event()

    def send(self, frame: Frame, session: Session) -> bool:
        if frame.seq:
            self.events.append(frame)
            self.arrived.set()
        return True

    async def drain(self) -> None:
        """Never full: the answer is capped by the replay limit."""

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        self.arrived.set()


async def answer(
    node: Node, session: Session, events: list[Frame], start: dict[str, int], more: bool
) -> dict[str, Any]:
    """The answer's body: at most MAX_EVENTS events and the position after exactly those (and
    those skipped before them: a second copy, a muted type)."""
    frames = events[:MAX_EVENTS]
    end = dict(session.position)
    if len(events) > MAX_EVENTS:
        end = dict(start)
        for frame in frames:
            end[frame.stream] = frame.seq
    unread, unseen = await node.store.counts(session.user)
    return {
        "events": [orjson.Fragment(f.body) for f in frames],
        "cursor": encode_cursor(end),
        "unread": unread,
        "unseen": unseen,
        "more": more or len(events) > MAX_EVENTS,
    }


class WaitingPoll(RawConnection):
    """A long-poll that left HTTP to wait: the connection's protocol and the hub's sink."""

    __slots__ = ("due", "ended", "events", "head", "hub", "node", "session", "start", "state")
    via = "poll"  # the transport, as presence and the delivery log name it (main, after #14/#15)

    WAITING, ANSWERING, DONE = 0, 1, 2

    def __init__(self, node: Node) -> None:
        super().__init__()
        self.node = node
        self.hub: Hub = node.hub
        self.events: list[Frame] = []
        self.session: Session | None = None
        self.start: dict[str, int] = {}
        self.head = b""
        self.due = 0
        self.ended = False  # closed by the hub before it left HTTP
        self.state = self.WAITING

    async def wait(self, proto: ClarionHttpProtocol, send: Send, seconds: float) -> None:
        """Capture the head, leave HTTP, and wait for the first event or the timeout."""
        self.head = await proto.head(send, HEAD)
        if proto.transport.is_closing():
            self.gone()
            return
        proto.hand_over(self)
        if self.events or self.ended or self.session is None or self.session.closed:
            self.answer()  # arrived (or closed) between the attach and now
        else:
            self.due = DEADLINES.add(self, time.time() + seconds)

    # -- the hub's sink ------------------------------------------------------------------------

    def send(self, frame: Frame, session: Session) -> bool:
        if frame.seq:
            self.events.append(frame)
            if len(self.events) == 1 and self.transport is not None:
                asyncio.get_running_loop().call_later(GATHER, self.answer)
        return True

    async def drain(self) -> None:
        """Never full: the answer is capped by the replay limit."""

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        if self.transport is None:
            self.ended = True
        else:
            self.answer()

    # -- the connection ------------------------------------------------------------------------

    def deadline(self) -> None:
        self.answer()

    def shutdown(self) -> None:
        self.keep_alive = False
        self.answer()

    def gone(self) -> None:
        self.state = self.DONE
        self._leave()

    def _leave(self) -> None:
        DEADLINES.remove(self, self.due)
        session, self.session = self.session, None
        if session is not None:
            self.hub.detach(session)

    def answer(self) -> None:
        if self.state == self.WAITING:
            self.state = self.ANSWERING
            spawn(self._answer())

    async def _answer(self) -> None:
        session = self.session
        self._leave()
        if session is None:
            return
        try:
            body = orjson.dumps(await answer(self.node, session, self.events, self.start, False))
            status = 200
        except ClarionError as exc:
            body, status = orjson.dumps(exc.body()), exc.status
        except Exception:
            err = StoreUnavailable()
            body, status = orjson.dumps(err.body()), err.status
        if self.state == self.DONE or self.transport.is_closing():
            return
        self.state = self.DONE
        head = STATUS_LINE[status] + self.head[self.head.index(b"\r\n") + 2 :]
        self.transport.write(b"%b%x\r\n%b\r\n0\r\n\r\n" % (head, len(body), body))
        self.resume_http()


class Wait(Response):
    """A response that leaves HTTP while it waits (`WaitingPoll.wait`)."""

    def __init__(self, poll: WaitingPoll, timeout: float) -> None:
        super().__init__(status_code=200)
        self.poll = poll
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.poll.wait(scope["extensions"]["clarion.http"], send, self.timeout)


@router.get("/poll")
async def poll(
    request: Request,
    since: Annotated[str | None, Query(max_length=8192)] = None,
    timeout: Annotated[float, Query(ge=0, le=30)] = 25,  # noqa: ASYNC109 (a query parameter)
    node: Node = Depends(get_node),
) -> JSON:
    """Answers at once when events are waiting, else at the first event or the timeout."""
    principal = await principal_of(request, node, None)
    streams = node.streams_of(principal)
    if since is None:
        snap = await node.store.snapshot(principal.user, streams)
        cursor = encode_cursor(snap.heads)
        return JSON(
            {
                "events": [],
                "cursor": cursor,
                "unread": snap.unread,
                "unseen": snap.unseen,
                "more": False,
            }
        )
    position = position_of(since)
    proto = request.scope.get("extensions", {}).get("clarion.http")
    waiting = WaitingPoll(node) if isinstance(proto, ClarionHttpProtocol) and timeout > 0 else None
    sink = waiting if waiting is not None else PollSink()
    session = Session(principal.user, streams, sink)
    try:
        start, more = await node.hub.attach(session, position, None, limit=MAX_EVENTS)
        if waiting is not None and not waiting.events and not more:
            waiting.session, waiting.start = session, start
            return Wait(waiting, timeout)  # type: ignore[return-value]
        events = sink.events
        if isinstance(sink, PollSink) and not events and not more:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.arrived.wait(), timeout)
            if sink.events:
                await asyncio.sleep(GATHER)
    except BaseException:
        node.hub.detach(session)
        raise
    node.hub.detach(session)
    return JSON(await answer(node, session, events, start, more))
