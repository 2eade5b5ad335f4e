"""A closed, detached WebSocket is freed by reference counting, not by the cycle collector.

The GC tuning (app.py) freezes what survives each full collection, live connections included,
so a connection that leaves a reference cycle when it closes waits for the complete collection
(minutes): the soak's memory grew with each reconnect wave until then (docs/benchmarks.md,
Soak). websockets' protocol and its parser generator hold each other (`_gone` breaks that), and
so did uvicorn's HTTP protocol and its parser after the upgrade (`handle_websocket_upgrade`).
A real uvicorn server with `ClarionWebSocketProtocol` and a real websockets client, with the
collector off: what a closed connection leaves must be gone at once.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from typing import Any

import uvicorn
import websockets

from clarion.transports.http import ClarionHttpProtocol
from clarion.transports.keepalive import Keepalive
from clarion.transports.protocol import ClarionWebSocketProtocol


class RecordedHttp(ClarionHttpProtocol):
    """Clarion's HTTP protocol, each instance (a WebSocket's before its upgrade) recorded."""

    made: list[weakref.ref[Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.made.append(weakref.ref(self))


async def test_a_closed_detached_websocket_leaves_no_cycle() -> None:
    left: list[weakref.ref[Any]] = []
    gone = asyncio.Event()
    keepalive = Keepalive(0)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Accepts, then detaches as the WebSocket endpoint does (transports/websocket.py)."""
        assert scope["type"] == "websocket"
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        proto = scope["extensions"]["clarion.raw"]
        left.extend([weakref.ref(proto), weakref.ref(proto.conn)])
        proto.detach(lambda text: None, gone.set, keepalive)

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        http=RecordedHttp,
        ws=ClarionWebSocketProtocol,
        lifespan="off",
        log_level="warning",
        loop="none",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):  # up to 5 s
            if server.started:
                break
            await asyncio.sleep(0.01)
        gc.collect()
        gc.disable()
        try:
            for _ in range(3):
                gone.clear()
                async with websockets.connect(f"ws://127.0.0.1:{port}/") as ws:
                    await ws.send("hello")
                await asyncio.wait_for(gone.wait(), 5)
                await asyncio.sleep(0.05)  # the transport's own callbacks run
            left += RecordedHttp.made
            alive = [type(r()).__name__ for r in left if r() is not None]
        finally:
            gc.enable()
        assert len(left) == 9
        assert alive == [], f"kept alive by a cycle: {alive}"
    finally:
        server.should_exit = True
        await serving
        sock.close()
