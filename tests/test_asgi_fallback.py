"""On an ASGI server without Clarion's protocol (here Starlette's test client), WebSockets take
the plain ASGI path (a queue and a writer task) with the same behaviour."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import jwt
import orjson
from starlette.testclient import TestClient

from clarion.app import create_app
from clarion.config import Settings
from clarion.models import PublishIn
from clarion.streams import decode_cursor, encode_cursor


def test_websocket_without_raw_protocol_delivers_and_resumes(tmp_path: Path) -> None:
    secret = secrets.token_urlsafe(32)
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret=secret)
    app = create_app(settings)
    token = jwt.encode({"sub": "ann", "exp": int(time.time()) + 60}, secret, algorithm="HS256")
    node = app.state.node
    with TestClient(app) as client:
        with client.websocket_connect("/v1/ws") as ws:
            ws.send_text(orjson.dumps({"type": "auth", "token": token}).decode())
            welcome = orjson.loads(ws.receive_text())
            assert welcome["type"] == "welcome"
            assert orjson.loads(ws.receive_text())["type"] == "unread"
            assert client.portal is not None
            client.portal.call(node.publish, PublishIn(users=["ann"], title="one"), None)
            event = orjson.loads(ws.receive_text())
            assert event["notification"]["title"] == "one" and event["seq"] == 1
            ws.send_text('{"type":"ping"}')
            assert orjson.loads(ws.receive_text()) == {"type": "pong"}
        client.portal.call(node.publish, PublishIn(users=["ann"], title="two"), None)
        with client.websocket_connect("/v1/ws") as ws:
            position = decode_cursor(welcome["cursor"]) | {"user:ann": 1}
            cursor = encode_cursor(position)
            ws.send_text(orjson.dumps({"type": "auth", "token": token, "cursor": cursor}).decode())
            kinds = [orjson.loads(ws.receive_text()) for _ in range(3)]
            assert [k["type"] for k in kinds] == ["welcome", "notification", "unread"]
            assert kinds[1]["notification"]["title"] == "two"
