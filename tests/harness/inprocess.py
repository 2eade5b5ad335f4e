"""The real app (`create_app`: its lifespan, middleware and store) served by uvicorn with
Clarion's HTTP protocol in the test's own event loop, behind a pass-through that counts the
HTTP requests the ASGI app saw: what a request answered from the protocol (api/lean.py,
api/lean_inbox.py) never reaches."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from clarion.app import create_app
from clarion.config import Settings
from clarion.store import SQLStore
from clarion.transports.http import ClarionHttpProtocol


class Counted:
    """The ASGI app, counting the HTTP requests that reached it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.http = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.http += 1
        await self.app(scope, receive, send)


class Live:
    def __init__(self, app: Counted, url: str, settings: Settings) -> None:
        self.app = app
        self.url = url
        self.settings = settings
        self.database_url = settings.database_url


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[Live]:
    app = Counted(create_app(settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(
        app, http=ClarionHttpProtocol, lifespan="on", log_level="warning", loop="none"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):  # up to 10 s: migrations, node start
            if server.started:
                break
            await asyncio.sleep(0.01)
        assert server.started
        yield Live(app, f"http://127.0.0.1:{sock.getsockname()[1]}", settings)
    finally:
        server.should_exit = True
        await task
        sock.close()


async def publisher_key(live: Live) -> str:
    """A new publisher key's Authorization value, made in the server's database."""
    store = SQLStore(live.database_url)
    await store.connect()
    try:
        _, secret = await store.create_key("fast", "publish", None)
    finally:
        await store.close()
    return f"Bearer {secret}"
