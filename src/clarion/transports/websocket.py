"""`GET /v1/ws`: first-frame authentication, resume from a cursor, then live frames.

After authentication the connection is handed to a `LiveSocket`. With Clarion's own uvicorn
protocol (transports/protocol.py) the endpoint then returns and frames arrive as callbacks;
on any other ASGI server the endpoint keeps a receive loop. Both run the same `LiveSocket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from clarion.auth import Principal, TokenExpired, origin_allowed
from clarion.domain import ClarionError
from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session
from clarion.node import Node
from clarion.streams import decode_cursor
from clarion.tasks import spawn

router = APIRouter()

BAD_REQUEST, UNAUTHORIZED, TOKEN_EXPIRED, FORBIDDEN = 4000, 4001, 4002, 4003
RATE_LIMITED = 4029
MAX_CLIENT_FRAMES_PER_SECOND = 20  # clients send pings and token refreshes, nothing more
STORE_DOWN = 1011


class RawSink:
    """Writes shared frame bytes straight to the socket's transport, corked per loop turn.

    Frames for a connection are collected and written once per event-loop iteration: on
    loopback a `send()` costs about as much as the rest of a delivery, and under load many
    events land in the same turn, so one write carries several frames. With no load there is
    one frame per turn and nothing waits (the flush runs with `call_soon`).
    """

    __slots__ = ("limit", "pending", "proto", "transport")

    def __init__(self, proto: Any, limit: int) -> None:
        self.proto = proto
        self.transport = proto.transport
        self.limit = limit
        self.pending: list[bytes] | None = None
        # Pause at our own limit, so `drain()` (the writable event) waits exactly until the
        # buffer is back under it.
        self.transport.set_write_buffer_limits(high=limit)

    def send(self, frame: Frame, session: Session) -> bool:
        pending = self.pending
        if pending is not None:
            pending.append(frame.ws)
            return True
        if self.transport.get_write_buffer_size() > self.limit:
            return False
        self.pending = [frame.ws]
        _corked.append(self)
        if len(_corked) == 1:
            asyncio.get_running_loop().call_soon(_flush)
        return True

    def write_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending and not self.proto.close_sent:
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def drain(self) -> None:
        await self.proto.writable.wait()

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        self.write_pending()
        if last is not None and not (self.transport.is_closing() or self.proto.close_sent):
            self.transport.write(last.ws)
        self.proto.close_detached(code, reason)


_corked: list[RawSink] = []


def _flush() -> None:
    global _corked
    sinks, _corked = _corked, []
    for sink in sinks:
        sink.write_pending()


class QueueSink:
    """For ASGI servers without `clarion.raw`: a bounded queue and a writer task."""

    def __init__(self, ws: WebSocket, limit: int) -> None:
        self.ws = ws
        self.limit = limit
        self.queued = 0
        self.queue: asyncio.Queue[bytes] = asyncio.Queue()
        self.writer = spawn(self._write())

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

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        self.writer.cancel()
        spawn(_close(self.ws, code, reason, last))

    def stop(self) -> None:
        """The client went away: end the writer task, there is no one to close."""
        self.writer.cancel()


async def _close(ws: WebSocket, code: int, reason: str, last: Frame | None = None) -> None:
    with contextlib.suppress(Exception):
        if last is not None:
            await ws.send_text(last.body.decode())
        await ws.close(code, reason)


async def _text(ws: WebSocket) -> str:
    """The next text frame; a binary one is a client error (ValueError), not a crash."""
    message = await ws.receive()
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    if message.get("text") is None:
        raise ValueError("frames must be text")
    text: str = message["text"]
    return text


def _parse(text: str) -> dict[str, Any]:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ValueError("frame is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("frame must be an object with a string `type`")
    return data


class LiveSocket:
    """An authenticated connection: its hub session, token expiry and client frames."""

    def __init__(self, node: Node, principal: Principal, sink: RawSink | QueueSink) -> None:
        self.node = node
        self.user = principal.user
        self.sink = sink
        self.session = Session(principal.user, node.streams_of(principal), sink)
        self.expiry: asyncio.TimerHandle | None = None
        self.expire_at(principal.expires_at)
        self.window = self.frames = 0

    def expire_at(self, expires_at: float) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        delay = max(0.0, expires_at - time.time())
        self.expiry = asyncio.get_running_loop().call_later(
            delay, self.close, TOKEN_EXPIRED, "token expired"
        )

    def close(self, code: int, reason: str) -> None:
        self.sink.close(code, reason[:120])

    def on_text(self, text: str) -> None:
        now = int(time.monotonic())
        if now != self.window:
            self.window, self.frames = now, 0
        self.frames += 1
        if self.frames > MAX_CLIENT_FRAMES_PER_SECOND:
            self.close(RATE_LIMITED, "too many frames")
            return
        try:
            frame = _parse(text)
        except ValueError as exc:
            self.close(BAD_REQUEST, str(exc))
            return
        if frame["type"] == "ping":
            self.sink.send(Frame(message("pong")), self.session)
        elif frame["type"] == "auth" and isinstance(frame.get("token"), str):
            spawn(self._refresh(frame["token"]))
        else:
            self.close(BAD_REQUEST, f"unknown frame type {frame['type'][:40]!r}")

    async def _refresh(self, token: str) -> None:
        try:
            fresh = await self.node.tokens.verify_async(token)
        except ClarionError as exc:
            self.close(UNAUTHORIZED, exc.message)
            return
        if fresh.user != self.user:
            self.close(UNAUTHORIZED, "token is for another user")
            return
        self.expire_at(fresh.expires_at)
        try:
            await self.node.refreshed(self.session, fresh)
        except ClarionError:
            self.close(STORE_DOWN, "store unavailable, retry")

    def gone(self) -> None:
        if self.expiry is not None:
            self.expiry.cancel()
        self.node.hub.detach(self.session)


async def _authenticate(node: Node, ws: WebSocket) -> tuple[Principal, dict[str, int]] | None:
    """Wait for the `auth` frame; close with the matching 4000-range code on failure."""
    try:
        text = await asyncio.wait_for(_text(ws), node.settings.auth_timeout)
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
    if not await node.limits.allow("ip", ws.client.host if ws.client else "-"):
        await _close(ws, RATE_LIMITED, "too many connections from this address")
        return
    origin, host = ws.headers.get("origin"), ws.headers.get("host")
    if not origin_allowed(origin, host, node.settings.allowed_origins):
        await _close(ws, FORBIDDEN, "origin not allowed")
        return
    # Admission: a reconnect storm is served a few handshakes at a time, so the memory of
    # in-flight handshakes (queries, tokens, replay) stays bounded instead of peaking per client.
    async with node.admission:
        live = await _go_live(node, ws)
    if live is None:
        return
    try:  # Not detached (an ASGI server without `clarion.raw`): keep a receive loop.
        while True:
            live.on_text(await _text(ws))
    except ValueError as exc:
        live.close(BAD_REQUEST, str(exc))
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        live.gone()
        if isinstance(live.sink, QueueSink):  # always: a RawSink detaches and never gets here
            live.sink.stop()


async def _go_live(node: Node, ws: WebSocket) -> LiveSocket | None:
    """Authenticate, attach, and detach when the protocol allows; else return the socket."""
    auth = await _authenticate(node, ws)
    if auth is None:
        return None
    principal, position = auth
    proto = ws.scope.get("extensions", {}).get("clarion.raw")
    limit = node.settings.max_buffer
    live = LiveSocket(node, principal, RawSink(proto, limit) if proto else QueueSink(ws, limit))
    welcome = {
        "user": principal.user,
        "streams": live.session.streams,
        "heartbeat": node.settings.heartbeat,
        "expires_at": principal.expires_at,
    }
    try:
        await node.seen(principal)
        await node.hub.attach(live.session, position, welcome)
    except ClarionError as exc:
        live.gone()
        if exc.status == 429:
            await _close(ws, RATE_LIMITED, exc.message[:120])
        else:
            await _close(ws, STORE_DOWN, "store unavailable, retry")
        return None
    except BaseException:
        live.gone()
        raise
    if proto is not None:
        proto.detach(live.on_text, live.gone)
        return None
    return live
