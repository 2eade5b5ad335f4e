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
"""

from __future__ import annotations

from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.api.deps import address_limit
from clarion.api.publish import publish
from clarion.domain import ClarionError
from clarion.errors import render
from clarion.models import PublishIn
from clarion.node import Node

PATH = "/v1/notifications"


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
        node = self.node
        scope.setdefault("state", {})["who"] = f"key:{key.id}"  # as `deps.publisher` sets it
        client = scope.get("client")
        try:
            await address_limit(node, client[0] if client else "-", {"authorization": auth or ""})
            await node.limits.check("key", key.id)
            response = await publish(item, key, node)
        except ClarionError as exc:
            response = render(exc)
        await response(scope, receive, send)


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
