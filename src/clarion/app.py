"""The ASGI application: API routers, transports, health, metrics, static files and demo."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi_offline import FastAPIOffline
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion import __version__, errors, metrics, tracing
from clarion.access import AccessLog
from clarion.api import (
    control,
    inbox,
    keys,
    lean,
    lean_inbox,
    preferences,
    publish,
    push,
    responses,
    topics,
    unsubscribe,
    users,
)
from clarion.api import webhooks as webhook_api
from clarion.api.deps import client_ip
from clarion.auth import origin_allowed
from clarion.config import Settings, load_settings
from clarion.domain import ClarionError, StoreUnavailable
from clarion.node import Node
from clarion.responses import JSON
from clarion.transports import polling, sse, websocket
from clarion.transports.cork import set_write_delay
from clarion.transports.http import FAST, SLOTS, UPGRADE

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("clarion.app")


class BodyLimit:
    """Refuse bodies over the limit with 413 before they are read into memory."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._too_large(send)
            return
        if length is None and scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            # Chunked: read it here, up to the limit, so an oversized one is a 413 too.
            chunks, size, more = [], 0, True
            while more:
                msg = await receive()
                if msg["type"] != "http.request":
                    return
                chunks.append(msg.get("body", b""))
                size += len(chunks[-1])
                if size > self.limit:
                    await self._too_large(send)
                    return
                more = msg.get("more_body", False)
            body = b"".join(chunks)
            replayed = False

            async def replay() -> Message:
                nonlocal replayed
                if replayed:
                    return await receive()
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
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
    settings = settings or load_settings()
    node = Node(settings)
    door = websocket.Door(node)
    # What SecurityHeaders and OriginCORS (no Origin) add to an answer, for the publishes and
    # inbox calls answered without them (api/lean.py, api/lean_inbox.py; tests/test_fast_*.py
    # hold the two equal).
    added = [*SecurityHeaders.HEADERS, (b"vary", b"Origin")]
    fast = lean.first(
        lean.FastPublish(node, settings.max_body, added).take,
        lean_inbox.FastInbox(node, settings.max_body, added).take,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        tracing.start()  # only with OTEL_EXPORTER_OTLP_ENDPOINT set (tracing.py)
        await node.start()
        log.info(
            "serving: database %s, broker %s",
            settings.database_label(),
            settings.broker_url.split(":", 1)[0],  # (a URL may hold a password)
        )
        _drain_on_signals(node)
        undo_gc = _tune_gc() if settings.gc_tuning else None
        set_write_delay(settings.write_delay)  # spacing of the corked socket writes
        # The lifespan state reaches uvicorn's protocols (`app_state`): Clarion's HTTP protocol
        # answers `/v1/ws` upgrades itself, a plain publish and the inbox's hot calls, and
        # bounds the long-polls running at once (transports/http.py).
        yield {UPGRADE: door.upgrade, FAST: fast, SLOTS: node.poll_slots}
        if undo_gc is not None:
            undo_gc()
        await node.stop()
        tracing.stop()

    # A self-hosted server serves its own API docs: Swagger UI (/docs) and ReDoc (/redoc) from
    # the assets fastapi-offline ships, never from a CDN.
    app = FastAPIOffline(
        static_url="/docs/assets",
        title="Clarion",
        version=__version__,
        summary="Self-hosted real-time notifications: publish, inbox, live delivery.",
        lifespan=lifespan,
        default_response_class=JSON,
    )
    app.state.node = node
    errors.install(app)
    routers = (
        publish,
        control,
        webhook_api,
        inbox,
        topics,
        preferences,
        keys,
        push,
        users,
        unsubscribe,
        sse,
        polling,
    )
    for module in routers:
        app.include_router(
            module.router,
            dependencies=[Depends(client_ip)],
            responses={**responses.COMMON, **responses.AUTHENTICATED},
        )

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["ops"])
    async def readyz() -> dict[str, Any]:
        """The store answers and the node is not shutting down; with consumers
        (`CLARION_CONSUME`), each one's state, counters and backlog."""
        if node.draining:
            raise StoreUnavailable("shutting down")
        await node.store.ping()
        ready: dict[str, Any] = {"status": "ready", "connections": len(node.hub.sessions)}
        if node.consumers.loops:  # a source that is down is reported, not made a 503
            ready["consumers"] = node.consumers.status()
        return ready

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def prometheus(request: Request) -> Response:
        """Prometheus metrics; with `CLARION_METRICS_REQUIRE_KEY`, for an admin API key only."""
        if settings.metrics_require_key:
            await node.keys.check(request.headers.get("authorization"), "admin")
        return Response(await metrics.render(node), media_type="text/plain; version=0.0.4")

    # Scripts and styles are public: any page may load them (CORS `*`, never credentials), so
    # a page on an origin the policy refuses still gets the widget, which then says why.
    public = CORSMiddleware(StaticFiles(directory=STATIC), allow_origins=["*"])
    app.mount("/static", public, name="static")
    if settings.demo:
        from clarion import demo

        app.include_router(demo.router)
    if settings.console:
        from clarion.api import console

        app.include_router(console.router, dependencies=[Depends(client_ip)])
    app.add_middleware(lean.LeanPublish, node=node)  # POST /v1/notifications, same answers
    app.add_middleware(BodyLimit, limit=settings.max_body)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(websocket.WebSocketEndpoint, door=door)  # /v1/ws before any routing
    app.add_middleware(OriginCORS, allowed=settings.allowed_origins)
    app.add_middleware(AccessLog)  # outermost: times and logs every request, refusals too
    return app


class OriginCORS(CORSMiddleware):
    """CORS by the same policy as the live Origin checks (`auth.origin_allowed`): a page that
    may open a WebSocket may also call the inbox API and load the widget, and the reverse."""

    def __init__(self, app: ASGIApp, allowed: list[str]) -> None:
        super().__init__(
            app,
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"],
            max_age=600,
        )
        self.allowed = allowed

    def is_allowed_origin(self, origin: str) -> bool:
        return origin_allowed(origin, None, self.allowed)


FULL_EVERY = 300.0  # seconds between two complete collections, frozen objects included


def _tune_gc() -> Callable[[], None]:
    """Short garbage-collector pauses: full collections otherwise stop delivery for long.

    A full collection walks every tracked object: about 50 per live connection, some 600,000 at
    10,000 connections, for 300-450 ms on the benchmark machine, every few seconds while
    connections arrive (docs/benchmarks.md). Instead, what exists once started (~120,000
    objects: modules, routes, models) is frozen, never to be walked again, and so is whatever
    survives each full collection: the next one only walks what was created since. The price:
    a reference cycle that becomes garbage while frozen (a closed connection's objects) waits
    for the complete collection that runs every FULL_EVERY seconds, the one long pause left.
    `CLARION_GC_TUNING=0` keeps Python's defaults (for comparisons). Returns the undo.
    """
    loop = asyncio.get_running_loop()

    def freeze_survivors(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == 2:
            loop.call_soon_threadsafe(gc.freeze)  # from any thread, outside the collection

    async def complete_collections() -> None:
        while True:
            await asyncio.sleep(FULL_EVERY)
            gc.unfreeze()
            gc.collect()  # and freeze_survivors freezes what is left

    gc.collect()
    gc.freeze()
    gc.callbacks.append(freeze_survivors)
    task = asyncio.create_task(complete_collections())

    def undo() -> None:
        task.cancel()
        gc.callbacks.remove(freeze_survivors)
        gc.unfreeze()

    return undo


def _drain_on_signals(node: Node) -> None:
    """On SIGTERM/SIGINT, before the server stops: end live streams and tell clients to go.

    The server waits for open requests to finish, and SSE streams and long-polls would
    otherwise hold it until its timeout. Chained in front of the server's own handlers.
    """
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(sig)
        if not callable(previous):
            continue

        def handler(signum: int, frame: Any, previous: Any = previous) -> None:
            loop.call_soon_threadsafe(node.drain)
            previous(signum, frame)

        with contextlib.suppress(ValueError):  # not the main thread (embedded use)
            signal.signal(sig, handler)


class SecurityHeaders:
    """Plain ASGI (not BaseHTTPMiddleware, which would hold streaming responses)."""

    HEADERS = [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        worker = scope["path"].endswith("/sw.js")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *self.HEADERS]
                if worker:  # lets pages register the service worker for scope "/"
                    headers.append((b"service-worker-allowed", b"/"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
