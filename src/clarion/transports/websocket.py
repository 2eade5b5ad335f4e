"""`GET /v1/ws`: first-frame authentication, resume from a cursor, then live frames.

The endpoint is a raw ASGI app in front of FastAPI's routing (`WebSocketEndpoint`, installed by
app.py): a handshake is a few callbacks, not a dozen middleware and dependency frames. With
Clarion's own uvicorn protocol (transports/protocol.py) the connection is detached right after
the upgrade: while it waits for its `auth` frame it is an `Awaiting` (a deadline from accept,
counted against its address, no task, no handshake slot); a valid frame spawns the work that
needs a slot (`CLARION_MAX_HANDSHAKES`: token, follows, snapshot, replay), and the connection
becomes a `LiveSocket`. On any other ASGI server the endpoint keeps a receive loop, with the
same rules and the same `LiveSocket`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from clarion.access import request_id_of
from clarion.auth import Principal, TokenExpired, origin_allowed
from clarion.domain import ClarionError
from clarion.events import message
from clarion.frames import Frame
from clarion.hub import Session
from clarion.logs import REQUEST_ID
from clarion.node import Node
from clarion.streams import decode_cursor
from clarion.tasks import spawn
from clarion.transports.cork import cork
from clarion.transports.deadlines import DEADLINES
from clarion.transports.keepalive import Keepalive
from clarion.transports.rawws import RawWebSocket
from clarion.transports.upgrade import BadUpgrade, check, refusal, switching

log = logging.getLogger("clarion.websocket")

PATH = "/v1/ws"
BAD_REQUEST, UNAUTHORIZED, TOKEN_EXPIRED, FORBIDDEN = 4000, 4001, 4002, 4003
RATE_LIMITED = 4029
MAX_CLIENT_FRAMES_PER_SECOND = 20  # clients send pings and token refreshes, nothing more
STORE_DOWN = 1011


class RawSink:
    """Writes shared frame bytes straight to the socket's transport, corked per loop turn
    (transports/cork.py)."""

    via = "websocket"  # the transport, as presence and the delivery log name it

    __slots__ = ("held", "limit", "pending", "proto", "transport")

    def __init__(self, proto: Any, limit: int) -> None:
        self.proto = proto
        self.transport = proto.transport
        self.limit = limit
        self.pending: list[bytes] | None = None
        self.held = 0  # bytes in `pending`: past the limit they go out now, not at the flush
        # Pause at our own limit, so `drain()` (the writable event) waits exactly until the
        # buffer is back under it.
        self.transport.set_write_buffer_limits(high=limit)

    def send(self, frame: Frame, session: Session) -> bool:
        pending = self.pending
        if pending is not None:
            ws = frame.ws
            pending.append(ws)
            self.held += len(ws)
            if self.held > self.limit:  # a spaced flush must not hold more than the buffer
                self.write_pending()
            return True
        if self.transport.get_write_buffer_size() > self.limit:
            return False
        self.pending = [frame.ws]
        cork(self, at_once=not session.live)  # a handshake's burst waits for no spacing
        return True

    def write_pending(self) -> None:
        pending, self.pending = self.pending, None
        self.held = 0
        if pending and not (self.proto.close_sent or self.transport.is_closing()):
            self.transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def drain(self) -> None:
        await self.proto.drain()

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        self.write_pending()
        if last is not None and not (self.transport.is_closing() or self.proto.close_sent):
            self.transport.write(last.ws)
        self.proto.close_detached(code, reason)


class QueueSink:
    """For ASGI servers without `clarion.raw`: a bounded queue and a writer task."""

    via = "websocket"  # the transport, as presence and the delivery log name it

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
    """An authenticated connection: its hub session, token expiry (a per-second bucket,
    transports/deadlines.py, not a timer of its own) and client frames."""

    __slots__ = ("due", "frames", "node", "session", "sink", "user", "window")

    def __init__(self, node: Node, principal: Principal, sink: RawSink | QueueSink) -> None:
        self.node = node
        self.user = principal.user
        self.sink = sink
        self.session = Session(principal.user, node.streams_of(principal), sink)
        self.due = 0
        self.expire_at(principal.expires_at)
        self.window = self.frames = 0

    def expire_at(self, expires_at: float) -> None:
        DEADLINES.remove(self, self.due)
        self.due = DEADLINES.add(self, expires_at)

    def deadline(self) -> None:
        self.close(TOKEN_EXPIRED, "token expired")

    def close(self, code: int, reason: str) -> None:
        self.session.close_code = code
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
        DEADLINES.remove(self, self.due)
        self.node.hub.detach(self.session)


def _first_frame(text: str) -> tuple[str, dict[str, int]]:
    """The token and resume position of an `auth` frame; `ValueError` names what is wrong."""
    frame = _parse(text)
    if frame["type"] != "auth" or not isinstance(frame.get("token"), str):
        raise ValueError("first frame must be {type: auth, token}")
    cursor = frame.get("cursor")
    return frame["token"], decode_cursor(cursor if isinstance(cursor, str) else None)


class PendingAuth:
    """Accepted sockets still waiting for their `auth` frame, counted per client address, so
    that one address cannot hold the server's memory with idle unauthenticated sockets."""

    def __init__(self, per_address: int) -> None:
        self.per_address = per_address
        self.counts: dict[str, int] = {}

    def enter(self, address: str) -> bool:
        n = self.counts.get(address, 0)
        if n >= self.per_address:
            return False
        self.counts[address] = n + 1
        return True

    def leave(self, address: str) -> None:
        n = self.counts.pop(address, 1) - 1
        if n > 0:
            self.counts[address] = n


async def _no_app(scope: Any, receive: Any, send: Any) -> None:
    """(Only the trusted-hosts list of `ProxyHeadersMiddleware` is used.)"""


class Door:
    """What every WebSocket of a node goes through before it is live: the refusals (draining,
    the address's rate limit, Origin, the per-address cap on sockets awaiting `auth`), the
    keepalive wheel, and the handshake slots of `go_live`. One per node, shared by the raw
    upgrade (`upgrade`, from the HTTP protocol) and the ASGI endpoint."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.pending = PendingAuth(node.settings.max_pending_auth)
        self.keepalive = Keepalive(node.settings.heartbeat)
        self.trusted: Any = None  # uvicorn's trusted proxies, from the first upgrade's config

    def upgrade(self, http: Any) -> bool:
        """Take a WebSocket upgrade from the HTTP protocol `http` (transports/http.py) if it is
        for `/v1/ws`: answer the handshake from the headers already parsed, switch the
        connection to a detached WebSocket protocol and wait for its `auth` frame, all in this
        callback. False leaves the request to uvicorn and the ASGI app."""
        if http.url.partition(b"?")[0] != PATH.encode() or http.root_path:
            return False
        headers = http.headers
        accept = check(http.scope["method"], headers)
        if isinstance(accept, BadUpgrade):
            http.transport.write(refusal(accept))
            http.transport.close()
            return True
        proto = RawWebSocket.opened(http)
        http.leave_for(proto)
        proto.transport.write(switching(accept, http.server_state.default_headers))
        address, origin, host, rid = self._from(http)
        refused = self.refusal_now(address, origin, host)
        if refused is not None:
            proto.close_detached(*refused)
            return True
        spawn(Awaiting(self, proto, address, rid).rate_limit())
        return True

    def _from(self, http: Any) -> tuple[str, str | None, str | None, str | None]:
        """The client's address (through trusted proxies, as uvicorn's proxy-headers
        middleware gives it to ASGI apps), `Origin`, `Host` and the caller's request id."""
        origin = host = rid = None
        forwarded: list[bytes] = []
        for name, value in http.headers:
            if name == b"origin":
                origin = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
            elif name == b"x-forwarded-for":
                forwarded.append(value)
            elif name == b"x-request-id":
                rid = request_id_of({"headers": [(name, value)]})
        address = http.client[0] if http.client else "-"
        config = http.config
        if forwarded and config.proxy_headers:
            if self.trusted is None:
                self.trusted = ProxyHeadersMiddleware(_no_app, config.forwarded_allow_ips)
            trusted = self.trusted.trusted_hosts
            if address in trusted:
                via = b", ".join(forwarded).decode("latin-1")
                address = trusted.get_trusted_client_address(via)[0] or address
        return address, origin, host, rid

    def refusal_now(
        self, address: str, origin: str | None, host: str | None
    ) -> tuple[int, str] | None:
        """The refusals that need no I/O; the address's rate limit is checked after."""
        node = self.node
        if node.draining:
            return 1012, "server restarting"
        if not origin_allowed(origin, host, node.settings.allowed_origins):
            return FORBIDDEN, "origin not allowed"
        if not self.pending.enter(address):
            return RATE_LIMITED, "too many unauthenticated connections from this address"
        return None

    async def go_live(self, live: LiveSocket, principal: Principal, pos: dict[str, int]) -> bool:
        """The work of a valid `auth` frame, a few handshakes at a time (`node.admission`):
        the memory of handshakes in flight (queries, replays) stays bounded in a storm."""
        node = self.node
        welcome = {
            "user": principal.user,
            "streams": live.session.streams,
            "heartbeat": node.settings.heartbeat,
            "expires_at": principal.expires_at,
        }
        async with node.admission:
            if live.session.closed:  # gone while waiting for a slot
                return False
            try:
                await node.seen(principal)
                await node.hub.attach(live.session, pos, welcome)
            except ClarionError as exc:
                live.gone()
                if exc.status == 429:  # the user's connections here are at their cap
                    live.close(RATE_LIMITED, exc.message)
                else:
                    live.close(STORE_DOWN, "store unavailable, retry")
                return False
            except BaseException:
                live.gone()
                raise
        return True


class WebSocketEndpoint:
    """ASGI middleware that serves `GET /v1/ws` itself and passes everything else on: the
    path for upgrades the HTTP protocol did not take (`Door.upgrade`), and for other ASGI
    servers."""

    def __init__(self, app: ASGIApp, door: Door) -> None:
        self.app = app
        self.door = door
        self.node = door.node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        ws = WebSocket(scope, receive, send)
        try:
            await ws.accept()
        except (WebSocketDisconnect, OSError, RuntimeError):
            return  # gone during the upgrade
        address = scope["client"][0] if scope.get("client") else "-"
        refusal = await self._refusal(ws, address)
        if refusal is not None:
            await _close(ws, *refusal)
            return
        proto = (scope.get("extensions") or {}).get("clarion.raw")
        if proto is not None:
            Awaiting(self.door, proto, address, None)
        else:
            await self._plain(ws, address)

    async def _refusal(self, ws: WebSocket, address: str) -> tuple[int, str] | None:
        if not await self.node.limits.allow("ip", address):
            return RATE_LIMITED, "too many connections from this address"
        return self.door.refusal_now(address, ws.headers.get("origin"), ws.headers.get("host"))

    async def _plain(self, ws: WebSocket, address: str) -> None:
        """Without `clarion.raw`: the same handshake over ASGI receive/send calls."""
        node = self.node
        try:
            text = await asyncio.wait_for(_text(ws), node.settings.auth_timeout)
            token, position = _first_frame(text)
            principal = await node.tokens.verify_async(token)
        except (WebSocketDisconnect, RuntimeError):
            return  # gone before its auth frame
        except TimeoutError:
            await _close(ws, UNAUTHORIZED, "no auth frame in time")
            return
        except ValueError as exc:
            await _close(ws, BAD_REQUEST, str(exc)[:120])
            return
        except ClarionError as exc:
            await _close(ws, *_refused(exc))
            return
        finally:
            self.door.pending.leave(address)
        sink = QueueSink(ws, node.settings.max_buffer)
        live = LiveSocket(node, principal, sink)
        if not await self.door.go_live(live, principal, position):
            return
        try:
            while True:
                live.on_text(await _text(ws))
        except ValueError as exc:
            live.close(BAD_REQUEST, str(exc))
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            live.gone()
            sink.stop()


def _refused(exc: ClarionError) -> tuple[int, str]:
    if isinstance(exc, TokenExpired):
        return TOKEN_EXPIRED, "token expired"
    return UNAUTHORIZED, exc.message[:120]


class Awaiting:
    """A detached socket before its `auth` frame: a timer from accept and a place in its
    address's count, nothing else. Frames that follow the `auth` frame before the socket is
    live are kept (a few) and handed to the live socket in order."""

    __slots__ = ("address", "door", "early", "gone", "live", "proto", "rid", "timer")

    def __init__(self, door: Door, proto: Any, address: str, rid: str | None) -> None:
        self.door = door
        self.proto = proto
        self.address: str | None = address
        self.rid = rid  # the caller's X-Request-ID, for the session's log line
        self.early: list[str] = []
        self.gone = False
        self.live: LiveSocket | None = None
        timeout = door.node.settings.auth_timeout
        self.timer = asyncio.get_running_loop().call_later(timeout, self._expire)
        proto.detach(self.on_text, self.on_gone, door.keepalive)

    async def rate_limit(self) -> None:
        """The address's handshake rate limit (`CLARION_RATE_LIMIT_IP`), checked right after
        the upgrade (the counters are the `limits` library's, shared with HTTP requests)."""
        address = self.address
        if address is None or await self.door.node.limits.allow("ip", address):
            return
        self._release()
        self.proto.close_detached(RATE_LIMITED, "too many connections from this address")

    def _release(self) -> None:
        if self.address is not None:
            self.door.pending.leave(self.address)
            self.address = None
            self.timer.cancel()

    def _expire(self) -> None:
        self._release()
        self.proto.close_detached(UNAUTHORIZED, "no auth frame in time")

    def on_gone(self) -> None:
        self._release()
        self.gone = True
        if self.live is not None:
            self.live.gone()

    def on_text(self, text: str) -> None:
        if self.address is None:  # after the auth frame, before `welcome`
            if len(self.early) >= MAX_CLIENT_FRAMES_PER_SECOND:
                self.proto.close_detached(RATE_LIMITED, "too many frames")
            else:
                self.early.append(text)
            return
        self._release()
        try:
            token, position = _first_frame(text)
        except ValueError as exc:
            self.proto.close_detached(BAD_REQUEST, str(exc)[:120])
            return
        spawn(self._open(token, position))

    async def _open(self, token: str, position: dict[str, int]) -> None:
        node = self.door.node
        if self.proto.close_sent:  # refused by the rate limit meanwhile
            return
        try:
            principal = await node.tokens.verify_async(token)
        except ClarionError as exc:
            self.proto.close_detached(*_refused(exc))
            return
        if self.gone or self.proto.transport.is_closing():
            return
        if self.rid is not None:
            REQUEST_ID.set(self.rid)  # this task's own context: the session takes it
        sink = RawSink(self.proto, node.settings.max_buffer)
        live = self.live = LiveSocket(node, principal, sink)
        try:
            ok = await self.door.go_live(live, principal, position)
        except Exception:
            log.exception("WebSocket handshake of %s failed", principal.user)
            live.close(STORE_DOWN, "server error, retry")
            return
        if self.gone:  # gone during the handshake: undo what the attach registered after it
            live.gone()
            return
        if ok:
            self.proto.rebind(live.on_text, live.gone)
            for text in self.early:
                live.on_text(text)
