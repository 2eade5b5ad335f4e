"""A WebSocket after the raw upgrade is Clarion's own slotted protocol (transports/rawws.py).

Against a real `clarion serve` with a raw-socket client that writes frames byte by byte:
fragmented and split frames, pings, the close handshake and the protocol errors a browser never
makes but an attacker might. And in-process, uvicorn serving the app to clients in another
process: what an idle authenticated WebSocket allocates in the server (tracemalloc), which was
4-5 KB more with uvicorn's WebSocket protocol and `websockets`' parser behind it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import jwt
import orjson
import pytest
import uvicorn
from websockets.frames import Frame, Opcode

from clarion.app import create_app
from clarion.config import Settings
from clarion.transports.http import ClarionHttpProtocol
from clarion.transports.protocol import ClarionWebSocketProtocol
from clarion.transports.rawws import RawWebSocket
from harness.server import Server


def handshake(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of the server's next frame (unmasked); (-1, b"") at EOF."""

    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            more = sock.recv(n - len(data))
            if not more:
                raise EOFError
            data += more
        return data

    try:
        b0, b1 = exactly(2)
        n = b1 & 0x7F
        if n >= 126:
            n = int.from_bytes(exactly(2 if n == 126 else 8), "big")
        return b0 & 0x0F, exactly(n)
    except EOFError:
        return -1, b""


def text(data: str | bytes, fin: bool = True, opcode: Opcode = Opcode.TEXT) -> bytes:
    payload = data.encode() if isinstance(data, str) else data
    return Frame(opcode, payload, fin).serialize(mask=True)


def until(sock: socket.socket, kind: str) -> dict[str, object]:
    while True:
        opcode, payload = read_frame(sock)
        assert opcode == Opcode.TEXT, (opcode, payload)
        event: dict[str, object] = orjson.loads(payload)
        if event["type"] == kind:
            return event


def closed_with(sock: socket.socket) -> int:
    """The code of the server's close frame (after any events), then EOF."""
    while True:
        opcode, payload = read_frame(sock)
        if opcode == Opcode.CLOSE:
            return int.from_bytes(payload[:2], "big")
        assert opcode != -1, "closed without a close frame"


def test_frames_split_fragmented_and_pinged_are_understood(server: Server) -> None:
    sock = handshake(server.port)
    auth = text(orjson.dumps({"type": "auth", "token": server.token("raw1")}).decode())
    for i in range(len(auth)):  # one byte per write: every header boundary split
        sock.sendall(auth[i : i + 1])
        time.sleep(0.001)
    assert until(sock, "welcome")["user"] == "raw1"
    until(sock, "unread")  # the end of the handshake
    sock.sendall(text('{"type":', fin=False) + text(b"", opcode=Opcode.PING))
    assert read_frame(sock) == (Opcode.PONG, b"")  # a ping between fragments is answered
    sock.sendall(text(b' "ping"}', fin=True, opcode=Opcode.CONT))
    assert until(sock, "pong")["type"] == "pong"
    sock.sendall(text(b"abc", opcode=Opcode.PING))
    assert read_frame(sock) == (Opcode.PONG, b"abc")
    assert server.publish(users=["raw1"], title="after the ping").status_code == 201
    assert until(sock, "notification")["notification"]["title"] == "after the ping"  # type: ignore[index]
    sock.sendall(text(b"\x03\xe8bye", opcode=Opcode.CLOSE))
    assert read_frame(sock) == (Opcode.CLOSE, b"\x03\xe8bye")  # echoed, then EOF
    assert read_frame(sock) == (-1, b"")


@pytest.mark.parametrize(
    ("wire", "code"),
    [
        (Frame(Opcode.TEXT, b"{}").serialize(mask=False), 1002),
        (text(b"\xff\xfe{}"), 1007),
        (text(b"x" * (64 * 1024 + 1)), 1009),
        (text(b"x", opcode=Opcode.CONT), 1002),
    ],
    # Named: the masked frames differ per collection (random masks), and xdist's workers must
    # collect the same test ids.
    ids=["unmasked", "bad-utf8", "oversized", "orphan-continuation"],
)
def test_protocol_errors_close_with_their_code(server: Server, wire: bytes, code: int) -> None:
    sock = handshake(server.port)
    sock.sendall(wire)
    assert closed_with(sock) == code
    assert read_frame(sock) == (-1, b"")


def test_the_server_closes_and_the_client_answers(server: Server) -> None:
    sock = handshake(server.port)
    sock.sendall(text('{"type":"auth","token":"x"}'))
    opcode, payload = read_frame(sock)
    assert opcode == Opcode.CLOSE and int.from_bytes(payload[:2], "big") == 4001
    sock.sendall(text(payload[:2], opcode=Opcode.CLOSE))
    assert read_frame(sock) == (-1, b"")


CLIENTS = """
import base64, os, socket, sys
port, n, tokens = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(",")
from websockets.frames import Frame, Opcode
socks = []
for i in range(n):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /v1/ws HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
               "Connection: Upgrade\\r\\nSec-WebSocket-Key: " + key +
               "\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
    socks.append(s)
for s, token in zip(socks, tokens):  # a client sends frames once it has the 101
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        head += s.recv(1)
    auth = '{"type":"auth","token":"%s"}' % token
    s.sendall(Frame(Opcode.TEXT, auth.encode()).serialize(mask=True))
for s in socks:  # frames until the `unread` that ends the handshake
    data = b""
    while b'"unread"' not in data:
        more = s.recv(65536)
        assert more, data
        data += more
print("ready", flush=True)
sys.stdin.read()
"""


def _of_the_protocol(filename: str) -> bool:
    """Allocations of a WebSocket's protocol: uvicorn's and websockets' code, or Clarion's."""
    return "/websockets/" in filename or filename.endswith(
        ("transports/protocol.py", "transports/rawws.py", "transports/wsframes.py")
    )


async def test_an_idle_websocket_allocates_little_in_the_server(tmp_path: Path) -> None:
    """Python allocations per idle authenticated WebSocket, clients in another process."""
    n = 300
    secret = secrets.token_urlsafe(32)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        jwt_secret=secret,
        gc_tuning=False,
        rate_limit_ip="100000/second",
        max_pending_auth=1000,
    )
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(settings),
        http=ClarionHttpProtocol,
        ws=ClarionWebSocketProtocol,
        ws_max_size=settings.max_frame,
        ws_ping_interval=None,
        ws_ping_timeout=None,
        lifespan="on",
        log_level="warning",
        loop="none",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    exp = int(time.time()) + 3600
    procs: list[asyncio.subprocess.Process] = []

    async def connect(users: range) -> None:
        """`users` authenticated WebSockets, held by a client process until the test ends."""
        tokens = [jwt.encode({"sub": f"u{i}", "exp": exp}, secret) for i in users]
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            CLIENTS,
            str(port),
            str(len(tokens)),
            ",".join(tokens),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
        await asyncio.sleep(0.5)  # the last writes and tasks settle

    try:
        for _ in range(500):  # up to 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        await connect(range(n, n + 100))  # caches, compiled queries, pools: warm
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        await connect(range(n))
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        diffs = after.compare_to(before, "filename")
        protocol = sum(d.size_diff for d in diffs if _of_the_protocol(d.traceback[0].filename))
        per_conn = protocol / n
        held = [c for c in server.server_state.connections if isinstance(c, RawWebSocket)]
        assert len(held) == n + 100
        assert not hasattr(held[0], "__dict__")
        # 3,327 B with uvicorn's WebSocket protocol and websockets' parser; 160 B (the slots) now
        assert per_conn < 400, f"{per_conn:.0f} B per idle WebSocket in its protocol"
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        server.should_exit = True
        await serving
        sock.close()
