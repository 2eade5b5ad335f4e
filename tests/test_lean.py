"""The lean publish path (api/lean.py) serves a warm key's valid publish itself, and hands
everything else, body replayed, to the FastAPI route, whose answers stay the reference."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from clarion.api.lean import LeanPublish
from clarion.config import Settings
from clarion.node import Node


class Route:
    """Stands where the FastAPI router is: records what fell through, with the body it read."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[Node]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        jwt_secret="x" * 40,
        rate_limit_publish="2/minute",
    )
    node = Node(settings)
    await node.start()
    try:
        yield node
    finally:
        await node.stop()


async def call(
    app: LeanPublish, body: bytes, auth: str, ctype: bytes = b"application/json"
) -> tuple[int, Any]:
    headers = [(b"authorization", auth.encode()), (b"content-type", ctype)]
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/notifications",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
    }
    chunks = [body[: len(body) // 2], body[len(body) // 2 :]]  # a body in two messages

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks)}

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    payload = b"".join(m.get("body", b"") for m in sent[1:])
    return sent[0]["status"], orjson.loads(payload) if payload else None


async def test_a_warm_keys_valid_publish_is_served_and_everything_else_falls_through(
    node: Node,
) -> None:
    route = Route()
    lean = LeanPublish(route, node)
    _, secret = await node.store.create_key("lean", "publish", None)
    auth = f"Bearer {secret}"
    good = orjson.dumps({"users": ["ann"], "title": "hi"})
    # Not yet verified in this process: the route checks it (and warms the cache).
    assert (await call(lean, good, auth))[0] == 599 and route.bodies == [good]
    await node.keys.check(auth, "publish")
    status, out = await call(lean, good, auth)
    assert status == 201 and out["recipients"] == 1 and out["streams"] == ["user:ann"]
    assert [e.seq for e in await node.store.events_after("user:ann", 0, 10)] == [1]
    # A body the model refuses, or another content type: the route answers, body intact.
    bad = orjson.dumps({"users": ["ann"], "title": "x" * 100_000})
    assert (await call(lean, bad, auth))[0] == 599 and route.bodies[-1] == bad
    assert (await call(lean, b"{not json", auth))[0] == 599 and route.bodies[-1] == b"{not json"
    assert (await call(lean, good, auth, b"text/plain"))[0] == 599
    # The key's own limit (2 a minute here) is counted as the route counts it.
    assert (await call(lean, good, auth))[0] == 201
    status, out = await call(lean, good, auth)
    assert status == 429 and out["error"]["code"] == "rate_limited"
    assert len(route.bodies) == 4
