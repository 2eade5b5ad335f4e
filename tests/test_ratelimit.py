"""Rate limits per key, per user and per connection answer 429 / close 4029, then recover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from harness.server import Server


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLARION_RATE_LIMIT_PUBLISH": "5/second", "CLARION_RATE_LIMIT_USER": "5/second"}
    server = Server(Path(tmp_path_factory.mktemp("limited")), env).start()
    yield server
    server.kill()


def _burst(call: object, n: int) -> list[httpx.Response]:
    return [call() for _ in range(n)]  # type: ignore[operator]


def test_publisher_over_its_limit_gets_429(limited: Server) -> None:
    time.sleep(1.0 - time.time() % 1.0)  # start at a window's edge
    codes = [r.status_code for r in _burst(lambda: limited.publish(users=["a"]), 8)]
    assert codes[:5] == [201] * 5 and 429 in codes[5:]
    r = limited.publish(users=["a"])
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limited"
    time.sleep(1.1)
    assert limited.publish(users=["a"]).status_code == 201


def test_user_over_its_limit_gets_429(limited: Server) -> None:
    time.sleep(1.0 - time.time() % 1.0)
    h = limited.me("chatty")
    codes = [
        httpx.get(limited.url + "/v1/me/unread-count", headers=h).status_code for _ in range(8)
    ]
    assert codes[:5] == [200] * 5 and 429 in codes[5:]


def test_websocket_frame_flood_closes_4029(limited: Server) -> None:
    live = limited.connect("flooder")
    with pytest.raises(ConnectionClosed) as info:
        for _ in range(100):
            live.ws.send('{"type":"ping"}')
        while True:
            live.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 4029
