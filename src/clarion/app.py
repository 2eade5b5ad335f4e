"""The ASGI application: API routers, transports, health, metrics, static files and demo."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion import __version__, errors, metrics
from clarion.api import inbox, keys, publish
from clarion.config import Settings
from clarion.errors import ClarionError, StoreUnavailable
from clarion.node import Node
from clarion.responses import JSON
from clarion.transports import polling, sse, websocket

STATIC = Path(__file__).with_name("static")


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._too_large(send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            msg = await receive()
            seen += len(msg.get("body", b""))
            if seen > self.limit:
                raise ClarionError(413, "too_large", f"body over {self.limit} bytes")
            return msg

        await self.app(scope, limited, send)

    async def _too_large(self, send: Send) -> None:
        err = ClarionError(413, "too_large", f"body over {self.limit} bytes")
        await JSON(err.body(), status_code=413)({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        yield
        await node.stop()

    app = FastAPI(
        title="Clarion",
        version=__version__,
        summary="Self-hosted real-time notifications: publish, inbox, live delivery.",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.node = node
    errors.install(app)
    for module in (publish, inbox, keys, sse, polling, websocket):
        app.include_router(module.router)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, Any]:
        """The store answers and the node is not shutting down."""
        if node.draining:
            raise StoreUnavailable("shutting down")
        await node.store.ping()
        return {"status": "ready", "connections": len(node.hub.sessions)}

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus() -> Response:
        return Response(metrics.render(node), media_type="text/plain; version=0.0.4")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    if settings.demo:
        from clarion import demo

        app.include_router(demo.router)
    app.add_middleware(BodyLimit, limit=settings.max_body)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response

    return app
