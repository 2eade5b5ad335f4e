"""`POST /v1/notifications` without FastAPI's per-request machinery, with the same answers.

Through FastAPI a publish costs about 0.5 ms of server CPU before the store sees it (the
dependency graph, body parsing and validation through its adapters, routing, the exception
middleware), so one publish per request ran at a quarter of the batch API's rate
(docs/benchmarks.md). `LeanPublish` is raw ASGI in front of the router for this exact method
and path. It serves the common request itself: a publisher key that verified moments ago
(`Keys.known`, no query), a JSON body that `PublishIn.model_validate_json` accepts (the same
model, so fields added to it flow), the same rate limits in the same order, and then the
route's own function (`api.publish.publish`: group commit, 201 after the commit, the same
body). Everything else (no key or one not yet verified, another content type, a body the model
refuses) goes on to the FastAPI route with the body replayed, so every error answer, and the
OpenAPI document, are the route's own.

On Clarion's own HTTP protocol the same request skips the ASGI middleware too (`FastPublish`,
taken in transports/http.py where uvicorn would start the app): a request whose headers make
it one the middleware would pass through unchanged (no `Origin`, no proxy headers, a
`Content-Length` within the body limit, a warm key) is answered with the headers the
middleware adds (security headers, `Vary`, `X-Request-ID`) and logged by the same access
line; any other, and any body the model refuses, runs the whole ASGI app, body replayed.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

from pydantic import ValidationError
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.access import log_request, request_id_of
from clarion.api.deps import address_limit
from clarion.api.publish import publish
from clarion.domain import ApiKey, ClarionError
from clarion.errors import render
from clarion.logs import REQUEST_ID
from clarion.models import PublishIn
from clarion.node import Node
from clarion.transports.http import respond

PATH = "/v1/notifications"
Headers = Iterable[tuple[bytes, bytes]]
# Request headers that some middleware acts on (CORS, proxy addresses, chunked bodies against
# the body limit, 100-continue): a request with any of them takes the whole ASGI path.
ASGI_ONLY = frozenset((b"origin", b"x-forwarded-for", b"transfer-encoding", b"expect"))


class LeanPublish:
    def __init__(self, app: ASGIApp, node: Node) -> None:
        self.app = app
        self.node = node

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        auth = ctype = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                auth = value.decode("latin-1")
            elif name == b"content-type":
                ctype = value
        key = self.node.keys.known(auth)
        if key is None or not (ctype is None or ctype.startswith(b"application/json")):
            await self.app(scope, receive, send)
            return
        try:
            body = await _read(receive)
        except ClarionError as exc:  # over the body limit while reading (app.BodyLimit)
            await render(exc)(scope, receive, send)
            return
        try:
            item = PublishIn.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)
            return
        response = await answer(self.node, scope, item, key, auth or "")
        await response(scope, receive, send)


async def answer(node: Node, scope: Scope, item: PublishIn, key: ApiKey, auth: str) -> Response:
    """The route's answer for a valid body and a warm key: the limits in the route's order,
    then the route's own function."""
    scope.setdefault("state", {})["who"] = f"key:{key.id}"  # as `deps.publisher` sets it
    client = scope.get("client")
    try:
        await address_limit(node, client[0] if client else "-", {"authorization": auth})
        await node.limits.check("key", key.id)
        return await publish(item, key, node)
    except ClarionError as exc:
        return render(exc)


def plain(headers: Headers, max_body: int, *, body: bool = True) -> str | None:
    """The `Authorization` value of a request the middleware would pass through unchanged,
    else None: one `Bearer` credential, none of `ASGI_ONLY`, and a JSON (or untyped) body of a
    declared length within the body limit; with `body=False` (a route that reads none) the
    length may be absent and the type is not looked at."""
    auth = ctype = length = None
    for name, value in headers:
        if name in ASGI_ONLY:
            return None
        if name == b"authorization":
            if auth is not None:
                return None
            auth = value
        elif name == b"content-type":
            if ctype is not None:
                return None
            ctype = value
        elif name == b"content-length":
            if length is not None:
                return None
            length = value
    if auth is None or auth[:7].lower() != b"bearer ":
        return None
    if length is None:
        return None if body else auth.decode("latin-1")
    if not length.isdigit() or int(length) > max_body:
        return None
    if body and ctype is not None and not ctype.startswith(b"application/json"):
        return None
    return auth.decode("latin-1")


async def send_answer(
    added: Headers,
    scope: Scope,
    send: Send,
    started: float,
    answer: Callable[[], Awaitable[Response]],
) -> None:
    """`answer()`'s response written in one go with the headers the skipped middleware adds
    (`added`, and the request id), and the access line AccessLog would write."""
    request_id = request_id_of(scope)
    token = REQUEST_ID.set(request_id)
    status, sent = 500, 0
    try:
        response = await answer()
        headers = [*response.raw_headers, *added, (b"x-request-id", request_id.encode())]
        status = response.status_code
        await respond(send, status, headers, response.body)  # one write
        sent = len(response.body)
    finally:
        log_request(scope, status, started, sent)
        REQUEST_ID.reset(token)


class FastPublish:
    """`POST /v1/notifications` answered where Clarion's HTTP protocol would start the ASGI
    app: `take` returns the app to run for a request, this one's `serve` or the whole app."""

    def __init__(self, node: Node, max_body: int, added: list[tuple[bytes, bytes]]) -> None:
        self.node = node
        self.max_body = max_body
        self.added = added  # the response headers the skipped middleware adds (app.py)

    def take(self, scope: Scope, app: ASGIApp) -> ASGIApp:
        if scope["method"] != "POST" or scope["path"] != PATH:
            return app
        auth = plain(scope["headers"], self.max_body)
        key = self.node.keys.known(auth) if auth is not None else None
        if key is None or auth is None:
            return app
        return partial(self.serve, app, key, auth)

    async def serve(
        self, app: ASGIApp, key: ApiKey, auth: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        started = time.monotonic()
        body = await _read(receive)
        try:
            item = PublishIn.model_validate_json(body)
        except ValidationError:  # the route's own 400/422, through the whole app
            await app(scope, _replay(body, receive), send)
            return
        await send_answer(
            self.added, scope, send, started, partial(answer, self.node, scope, item, key, auth)
        )


Take = Callable[[Scope, ASGIApp], ASGIApp]


def first(*takes: Take) -> Take:
    """The app the first of `takes` picks for a request (each returns `app` for a request that
    is not its own)."""

    def take(scope: Scope, app: ASGIApp) -> ASGIApp:
        for one in takes:
            picked = one(scope, app)
            if picked is not app:
                return picked
        return app

    return take


async def _read(receive: Receive) -> bytes:
    chunks, more = [], True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """`receive` for the route: the body already read, then the connection's own messages."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay
