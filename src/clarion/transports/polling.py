"""`GET /v1/poll`: long-polling, for networks where neither WebSocket nor SSE gets through."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request

from clarion.api.deps import get_node
from clarion.frames import Frame
from clarion.hub import Session
from clarion.node import Node
from clarion.responses import JSON
from clarion.streams import encode_cursor
from clarion.transports.live import position_of, principal_of

router = APIRouter(prefix="/v1", tags=["live"])
MAX_EVENTS = 500
GATHER = 0.02  # after the first live event, wait this long for more to batch them


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
    sink = PollSink()
    session = Session(principal.user, streams, sink)
    try:
        start, more = await node.hub.attach(session, position, None, limit=MAX_EVENTS)
        if not sink.events and not more:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.arrived.wait(), timeout)
            if sink.events:
                await asyncio.sleep(GATHER)
    finally:
        node.hub.detach(session)
    frames = sink.events[:MAX_EVENTS]
    # The position after exactly the frames in this answer (and those skipped before them:
    # a second copy, a muted type).
    end = dict(session.position)
    if len(sink.events) > MAX_EVENTS:
        end = dict(start)
        for frame in frames:
            end[frame.stream] = frame.seq
    unread, unseen = await node.store.counts(principal.user)
    body: dict[str, Any] = {
        "events": [orjson.Fragment(f.body) for f in frames],
        "cursor": encode_cursor(end),
        "unread": unread,
        "unseen": unseen,
        "more": more or len(sink.events) > MAX_EVENTS,
    }
    return JSON(body)
