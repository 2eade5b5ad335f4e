"""`GET /v1/ws`: first-frame authentication, resume from a cursor, then live frames."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from clarion.auth import Principal, TokenExpired, origin_allowed
from clarion.errors import ClarionError
from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session
from clarion.node import Node
from clarion.streams import decode_cursor
from clarion.tasks import spawn

router = APIRouter()

BAD_REQUEST, UNAUTHORIZED, TOKEN_EXPIRED, FORBIDDEN = 4000, 4001, 4002, 4003


class RawSink:
    """Writes shared frame bytes straight to the socket (see transports/protocol.py)."""

    __slots__ = ("limit", "proto", "transport", "ws")

    def __init__(self, ws: WebSocket, proto: Any, limit: int) -> None:
        self.ws = ws
        self.proto = proto
        self.transport = proto.transport
        self.limit = limit

    def send(self, frame: Frame, session: Session) -> bool:
        transport = self.transport
        if transport.is_closing() or self.proto.close_sent:
            return True
        if transport.get_write_buffer_size() > self.limit:
            return False
        transport.write(frame.ws)
        return True

    async def drain(self) -> None:
        await self.proto.writable.wait()

    def close(self, code: int, reason: str) -> None:
        spawn(_close(self.ws, code, reason))


class QueueSink:
    """Fallback for ASGI servers without `clarion.raw`: a bounded queue and a writer task."""

    def __init__(self, ws: WebSocket, limit: int) -> None:
        self.ws = ws
        self.limit = limit
        self.queued = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.writer = asyncio.ensure_future(self._write())

    def send(self, frame: Frame, session: Session) -> bool:
        if self.queued > self.limit:
            return False
        self.queued += len(frame.body)
        self.queue.put_nowait(frame.body)
        return True

    async def _write(self) -> None:
        with contextlib.suppress(Exception):
            while True:
                body = await self.queue.get()
                self.queued -= len(body)
                await self.ws.send_text(body.decode())
                self.queue.task_done()

    async def drain(self) -> None:
        if self.queued > self.limit:
            await self.queue.join()

    def close(self, code: int, reason: str) -> None:
        self.writer.cancel()
        spawn(_close(self.ws, code, reason))


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):
        await ws.close(code, reason)


def _parse(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("frame is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("frame must be an object with a string `type`")
    return data


async def _authenticate(node: Node, ws: WebSocket) -> tuple[Principal, dict[str, int]] | None:
    """Wait for the `auth` frame; close with the matching 4000-range code on failure."""
    try:
        text = await asyncio.wait_for(ws.receive_text(), node.settings.auth_timeout)
        frame = _parse(text)
        if frame["type"] != "auth" or not isinstance(frame.get("token"), str):
            raise ValueError("first frame must be {type: auth, token}")
        cursor = frame.get("cursor")
        position = decode_cursor(cursor if isinstance(cursor, str) else None)
    except TimeoutError:
        await _close(ws, UNAUTHORIZED, "no auth frame in time")
        return None
    except ValueError as exc:
        await _close(ws, BAD_REQUEST, str(exc)[:120])
        return None
    try:
        principal = await node.tokens.verify_async(frame["token"])
    except TokenExpired:
        await _close(ws, TOKEN_EXPIRED, "token expired")
        return None
    except ClarionError as exc:
        await _close(ws, UNAUTHORIZED, exc.message[:120])
        return None
    return principal, position


@router.websocket("/v1/ws")
async def websocket_endpoint(ws: WebSocket) -> None:
    node: Node = ws.app.state.node
    await ws.accept()
    if node.draining:
        await _close(ws, 1012, "server restarting")
        return
    if not origin_allowed(
        ws.headers.get("origin"), ws.headers.get("host"), node.settings.allowed_origins
    ):
        await _close(ws, FORBIDDEN, "origin not allowed")
        return
    auth = await _authenticate(node, ws)
    if auth is None:
        return
    principal, position = auth
    try:
        await node.seen(principal)
    except ClarionError:
        await _close(ws, 1011, "store unavailable, retry")
        return
    proto = ws.scope.get("extensions", {}).get("clarion.raw")
    limit = node.settings.max_buffer
    sink = RawSink(ws, proto, limit) if proto is not None else QueueSink(ws, limit)
    session = Session(principal.user, node.streams_of(principal), sink)
    loop = asyncio.get_running_loop()
    expiry = loop.call_later(
        max(0.0, principal.expires_at - time.time()),
        sink.close,
        TOKEN_EXPIRED,
        "token expired",
    )
    try:
        welcome = {
            "user": principal.user,
            "streams": session.streams,
            "heartbeat": node.settings.heartbeat,
            "expires_at": principal.expires_at,
        }
        await node.hub.attach(session, position, welcome)
        while True:
            text = await ws.receive_text()
            try:
                frame = _parse(text)
            except ValueError as exc:
                await _close(ws, BAD_REQUEST, str(exc)[:120])
                return
            if frame["type"] == "ping":
                sink.send(Frame(message("pong")), session)
            elif frame["type"] == "auth" and isinstance(frame.get("token"), str):
                try:
                    fresh = await node.tokens.verify_async(frame["token"])
                except ClarionError as exc:
                    await _close(ws, UNAUTHORIZED, exc.message[:120])
                    return
                if fresh.user != principal.user:
                    await _close(ws, UNAUTHORIZED, "token is for another user")
                    return
                expiry.cancel()
                expiry = loop.call_later(
                    max(0.0, fresh.expires_at - time.time()),
                    sink.close,
                    TOKEN_EXPIRED,
                    "token expired",
                )
            else:
                await _close(ws, BAD_REQUEST, f"unknown frame type {frame['type'][:40]!r}")
                return
    except (WebSocketDisconnect, RuntimeError):
        pass
    except ClarionError:
        await _close(ws, 1011, "store unavailable, retry")
    finally:
        expiry.cancel()
        node.hub.detach(session)
        if isinstance(sink, QueueSink):
            sink.writer.cancel()
