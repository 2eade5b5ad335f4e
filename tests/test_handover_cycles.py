"""An SSE stream or a long-poll that left HTTP (`ClarionHttpProtocol.hand_over`) leaves its HTTP
protocol to reference counting, not to the cycle collector.

The GC tuning (app.py) freezes what survives each full collection, so a protocol kept by a
cycle once its connection left HTTP waits for the complete collection (minutes): with thousands
of streams reconnecting, memory steps up at each wave until then, as the WebSocket's did
(tests/test_ws_cycles.py). The protocol's scope names it (`clarion.http`) and its parser's
callbacks do; `hand_over` lets go of both. The whole app on a real uvicorn server with Clarion's
HTTP protocol, real HTTP clients, the collector off: every protocol that handed its connection
over must be gone once the connection is.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import socket
import time
import weakref
from pathlib import Path
from typing import Any

import httpx
import jwt
import uvicorn

from clarion.app import create_app
from clarion.config import Settings
from clarion.transports.http import ClarionHttpProtocol


class RecordedHttp(ClarionHttpProtocol):
    """Clarion's HTTP protocol; each instance, and each that hands its connection over, is
    recorded."""

    made: list[weakref.ref[Any]] = []
    handed: list[weakref.ref[Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(weakref.ref(self))

    def hand_over(self, conn: Any) -> None:
        super().hand_over(conn)
        self.handed.append(weakref.ref(self))


async def _until(check: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def test_a_stream_or_poll_handed_over_leaves_no_cycle(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret=secret, gc_tuning=False
    )
    app = create_app(settings)
    token = jwt.encode({"sub": "ann", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    auth = {"Authorization": f"Bearer {token}"}
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, http=RecordedHttp, log_level="warning", loop="none")
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    hub = app.state.node.hub
    try:
        await _until(lambda: server.started)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
            cursor = (await client.get("/v1/poll")).json()["cursor"]  # a plain request
        gc.collect()
        RecordedHttp.made.clear()
        gc.disable()
        try:
            for _ in range(2):
                async with (
                    httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client,
                    client.stream("GET", "/v1/sse") as stream,
                ):
                    async for line in stream.aiter_lines():
                        if line.startswith("data:"):  # the welcome: the stream is attached
                            break
                # A long-poll that times out, then a second request on the same connection.
                async with httpx.AsyncClient(base_url=base, headers=auth, timeout=30) as client:
                    r = await client.get("/v1/poll", params={"since": cursor, "timeout": 0.05})
                    assert r.status_code == 200 and r.json()["events"] == []
                    assert (await client.get("/healthz")).status_code == 200
                await _until(lambda: not hub.sessions and len(server.server_state.connections) == 0)
                await asyncio.sleep(0.05)  # the transports' own callbacks run
            handed = [r for r in RecordedHttp.handed if r() is not None]
            alive = [r for r in RecordedHttp.made if r() is not None]
        finally:
            gc.enable()
        assert len(RecordedHttp.handed) == 4
        assert handed == [], "a protocol that handed its connection over is kept by a cycle"
        # SSE, the long-poll, and the protocol that took the poll's connection back (/healthz)
        assert len(RecordedHttp.made) == 6
        assert alive == [], "a closed connection's protocol is kept by a cycle"
    finally:
        server.should_exit = True
        await serving
        sock.close()
