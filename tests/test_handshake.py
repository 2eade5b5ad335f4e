"""WebSocket handshakes under abuse (issue #13): unauthenticated sockets cost nothing.

Idle sockets that never send their `auth` frame hold no handshake slot, their deadline runs
from the upgrade, an address may keep only so many waiting; request heads have a deadline
(slowloris); a client that leaves before or during authentication logs nothing alarming; the
keepalive wheel closes a peer that stops answering. Each against a real `clarion serve`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import time
from pathlib import Path

import orjson
import websockets
from websockets.sync.client import connect as ws_connect

from harness.server import Server

IDLE_FROM = "127.0.0.1"
CLIENT_FROM = "127.0.0.2"  # loopback: any 127/8 address is ours to connect from


def start(tmp_path: Path, **env: str) -> Server:
    return Server(tmp_path, {f"CLARION_{k.upper()}": v for k, v in env.items()}).start()


def welcome_from(server: Server, user: str, source: str, timeout: float) -> dict[str, object]:
    """Connect from `source`, authenticate, and return the first event (within `timeout`)."""
    with ws_connect(
        server.ws_url, open_timeout=timeout, source_address=(source, 0), close_timeout=1
    ) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": server.token(user)}).decode())
        event: dict[str, object] = orjson.loads(ws.recv(timeout=timeout))
        return event


async def _open_idle(url: str, n: int) -> list[websockets.ClientConnection]:
    """`n` upgraded sockets from IDLE_FROM that never authenticate."""

    async def one() -> websockets.ClientConnection:
        return await websockets.connect(
            url, local_addr=(IDLE_FROM, 0), open_timeout=20, ping_interval=None
        )

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def _closed(conns: list[websockets.ClientConnection], wait: float) -> dict[int, int]:
    """Close codes received within `wait` seconds, by code (still open: not counted)."""
    await asyncio.sleep(wait)
    codes: dict[int, int] = {}
    for c in conns:
        if c.close_code is not None:
            codes[c.close_code] = codes.get(c.close_code, 0) + 1
    return codes


def test_idle_sockets_do_not_hold_handshake_slots(tmp_path: Path) -> None:
    """300 idle sockets from one address: all but the per-address cap are refused with 4029,
    and a valid client from another address gets `welcome` at once while the rest are held,
    although only 4 handshakes may run at a time and idle sockets may wait 30 s."""
    server = start(tmp_path, max_handshakes="4", max_pending_auth="50", auth_timeout="30")
    try:

        async def scenario() -> tuple[dict[int, int], set[str], int, dict[str, object], float]:
            conns = await _open_idle(server.ws_url, 300)
            codes = await _closed(conns, 1.0)
            reasons = {c.close_reason or "" for c in conns if c.close_code is not None}
            held = sum(c.close_code is None for c in conns)
            t0 = time.monotonic()
            event = await asyncio.to_thread(welcome_from, server, "valid", CLIENT_FROM, 10)
            took = time.monotonic() - t0
            for c in conns:
                await c.close()
            return codes, reasons, held, event, took

        codes, reasons, held, event, took = asyncio.run(scenario())
        assert codes == {4029: 250}
        assert reasons == {"too many unauthenticated connections from this address"}
        assert held == 50
        assert event["type"] == "welcome"
        assert took < 10  # the idle sockets hold their 30 s: no slot was theirs
    finally:
        server.kill()


def test_idle_sockets_under_the_cap_do_not_delay_a_login_from_their_address(
    tmp_path: Path,
) -> None:
    server = start(tmp_path, max_handshakes="2", auth_timeout="30")
    try:

        async def scenario() -> tuple[dict[str, object], float, int]:
            conns = await _open_idle(server.ws_url, 60)
            t0 = time.monotonic()
            event = await asyncio.to_thread(welcome_from, server, "same", IDLE_FROM, 10)
            took = time.monotonic() - t0
            still = sum(c.close_code is None for c in conns)
            for c in conns:
                await c.close()
            return event, took, still

        event, took, still = asyncio.run(scenario())
        assert event["type"] == "welcome" and took < 10
        assert still == 60
    finally:
        server.kill()


def test_auth_deadline_runs_from_accept(tmp_path: Path) -> None:
    """One handshake slot, six idle sockets: each is closed 2 s after its own upgrade (4001),
    not one after another as slots free up (which would take 12 s)."""
    server = start(tmp_path, max_handshakes="1", auth_timeout="2")
    try:

        async def scenario() -> tuple[dict[int, int], float]:
            t0 = time.monotonic()
            conns = await _open_idle(server.ws_url, 6)
            await asyncio.gather(*(c.wait_closed() for c in conns))
            return await _closed(conns, 0), time.monotonic() - t0

        codes, took = asyncio.run(scenario())
        assert codes == {4001: 6}
        assert took < 6
    finally:
        server.kill()


def test_partial_request_heads_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    server = start(tmp_path, header_timeout="1")
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=8) as slow:
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: a")
            t0 = time.monotonic()
            assert slow.recv(1024) == b""  # closed, nothing answered
            assert time.monotonic() - t0 < 5
        # a keep-alive connection that starts a second head and stalls is closed too
        with socket.create_connection(("127.0.0.1", server.port), timeout=8) as conn:
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = b""
            while not answer.endswith(b'"ok"}'):  # the head and the body may come apart
                answer += conn.recv(4096)
            assert answer.startswith(b"HTTP/1.1 200")
            conn.sendall(b"GET /healthz HTTP/1.1\r\nHo")
            t0 = time.monotonic()
            assert conn.recv(1024) == b""
            assert time.monotonic() - t0 < 5
        # a head that arrives in time, in pieces, is served
        with socket.create_connection(("127.0.0.1", server.port), timeout=8) as ok:
            ok.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(0.3)
            ok.sendall(b"Host: x\r\n\r\n")
            assert ok.recv(4096).startswith(b"HTTP/1.1 200")
    finally:
        server.kill()


def _upgrade(port: int) -> socket.socket:
    """A raw WebSocket client socket, upgraded, that answers nothing by itself."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: " + key + b"\r\n"
        b"Sec-WebSocket-Version: 13\r\n\r\n"
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def _text_frame(text: str | bytes) -> bytes:
    """A masked client text frame (up to 64 KiB)."""
    payload, mask = text.encode() if isinstance(text, str) else text, os.urandom(4)
    n = len(payload)
    head = bytes([0x81, 0x80 | n]) if n < 126 else bytes([0x81, 0x80 | 126]) + struct.pack("!H", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """One unmasked server frame: (opcode, payload)."""

    def exactly(n: int) -> bytes:
        out = b""
        while len(out) < n:
            chunk = sock.recv(n - len(out))
            assert chunk, "connection closed"
            out += chunk
        return out

    first, second = exactly(2)
    n = second & 0x7F
    if n == 126:
        n = struct.unpack("!H", exactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", exactly(8))[0]
    return first & 0x0F, exactly(n)


def test_disconnects_before_or_during_auth_log_no_errors(tmp_path: Path) -> None:
    server = start(tmp_path)
    try:
        for _ in range(10):  # gone right after the upgrade
            _upgrade(server.port).close()
        for _ in range(10):  # gone right after a valid auth frame (the handshake is running)
            sock = _upgrade(server.port)
            sock.sendall(_text_frame(orjson.dumps({"type": "auth", "token": server.token("x")})))
            sock.close()
        for _ in range(5):  # reset in the middle of the auth frame
            sock = _upgrade(server.port)
            sock.sendall(_text_frame('{"type":"auth","token":"' + "a" * 40)[:20])
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
        for _ in range(5):  # gone halfway through the upgrade request
            with socket.create_connection(("127.0.0.1", server.port)) as sock:
                sock.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n")
        assert welcome_from(server, "after", "127.0.0.1", 10)["type"] == "welcome"
        time.sleep(0.5)
        log = server.log()
        assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
    finally:
        server.kill()


def test_keepalive_closes_a_silent_peer_and_keeps_an_answering_one(tmp_path: Path) -> None:
    server = start(tmp_path, heartbeat="1")
    try:
        silent = _upgrade(server.port)
        silent.sendall(_text_frame(orjson.dumps({"type": "auth", "token": server.token("s")})))
        with ws_connect(server.ws_url, close_timeout=1) as answering:  # pongs by itself
            answering.send(orjson.dumps({"type": "auth", "token": server.token("a")}).decode())
            assert orjson.loads(answering.recv(timeout=5))["type"] == "welcome"
            opcodes = []
            while not opcodes or opcodes[-1][0] != 0x8:
                opcodes.append(_read_frame(silent))
            assert (0x9, b"") in opcodes  # pinged, did not answer
            assert struct.unpack("!H", opcodes[-1][1][:2])[0] == 1011, opcodes[-1]
            answering.send('{"type":"ping"}')  # still open after the silent one's 2-3 s
            assert orjson.loads(answering.recv(timeout=5))["type"] in ("unread", "pong")
        silent.close()
    finally:
        server.kill()


def _answer(port: int, request: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """Send a raw request; (status line, headers, body) of the answer, up to its close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, {k.lower(): v for k, _, v in (h.partition(b": ") for h in lines)}, body


def test_a_bad_handshake_is_refused_naming_the_header(server: Server) -> None:
    """`/v1/ws` answers its handshake from the request head Clarion's HTTP protocol parsed
    (transports/upgrade.py): a request that is not a valid handshake gets a JSON error that
    names the header at fault, and a good one the 101 with the right accept key."""
    base = (
        b"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    )
    status, headers, body = _answer(server.port, base + b"Sec-WebSocket-Version: 13\r\n\r\n")
    assert status.startswith(b"HTTP/1.1 400"), status
    assert headers[b"content-type"] == b"application/json"
    assert orjson.loads(body)["error"]["field"] == "Sec-WebSocket-Key"
    bad_key = b"Sec-WebSocket-Key: c2hvcnQ=\r\nSec-WebSocket-Version: 13\r\n\r\n"
    status, _, body = _answer(server.port, base + bad_key)
    assert status.startswith(b"HTTP/1.1 400") and b"16 bytes" in body
    old = b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 8\r\n\r\n"
    status, headers, body = _answer(server.port, base + old)
    assert status.startswith(b"HTTP/1.1 426"), status
    assert headers[b"sec-websocket-version"] == b"13"
    assert orjson.loads(body)["error"]["field"] == "Sec-WebSocket-Version"
    # RFC 6455's own example: this key is answered with this accept value.
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(base + old.replace(b"Version: 8", b"Version: 13"))
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    assert b"\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head
