"""Rate limits per key, per user and per connection answer 429 / close 4029, then recover."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.server import Server

WINDOW = 3.0


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Windows of 3 s: a busy machine must still fit a burst of 8 calls into one window.
    env = {"CLARION_RATE_LIMIT_PUBLISH": "5/3second", "CLARION_RATE_LIMIT_USER": "5/3second"}
    server = Server(Path(tmp_path_factory.mktemp("limited")), env).start()
    yield server
    server.kill()


def _burst(call: object, n: int) -> list[httpx.Response]:
    return [call() for _ in range(n)]  # type: ignore[operator]


def test_publisher_over_its_limit_gets_429(limited: Server) -> None:
    time.sleep(WINDOW - time.time() % WINDOW)  # start at a window's edge
    codes = [r.status_code for r in _burst(lambda: limited.publish(users=["a"]), 8)]
    assert codes[:5] == [201] * 5 and 429 in codes[5:]
    r = limited.publish(users=["a"])
    if r.status_code == 429:
        assert r.json()["error"]["code"] == "rate_limited"
    time.sleep(WINDOW + 0.1)
    assert limited.publish(users=["a"]).status_code == 201


def test_user_over_its_limit_gets_429(limited: Server) -> None:
    time.sleep(WINDOW - time.time() % WINDOW)
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


@pytest.fixture(scope="module")
def per_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLARION_RATE_LIMIT_IP": "5/3second", "CLARION_RATE_LIMIT_PUBLISH": "100/3second"}
    server = Server(Path(tmp_path_factory.mktemp("per_address")), env).start()
    yield server
    server.kill()


def test_a_valid_key_meets_its_own_limit_not_the_address_limit(per_address: Server) -> None:
    """A backend publishes from one address: past the address limit its key's limit applies,
    while anonymous calls and unknown keys from that address are refused."""
    time.sleep(WINDOW - time.time() % WINDOW)
    codes = [r.status_code for r in _burst(lambda: per_address.publish(users=["a"]), 12)]
    assert codes == [201] * 12
    bad = {"Authorization": "Bearer clk_0123456789abcdef_" + "A" * 43}
    url = per_address.url + "/v1/notifications"
    refused = [httpx.post(url, json={"users": ["a"]}, headers=bad) for _ in range(3)]
    assert [r.status_code for r in refused] == [429] * 3
    assert refused[0].json()["error"]["code"] == "rate_limited"
    assert refused[0].headers["retry-after"].isdigit()
    h = per_address.me("reader")
    assert httpx.get(per_address.url + "/v1/me/unread-count", headers=h).status_code == 429


@pytest.mark.slow  # a server of its own
def test_websocket_upgrades_count_against_the_address_limit(tmp_path: Path) -> None:
    """`/v1/ws` upgrades are answered by the HTTP protocol itself (transports/upgrade.py); each
    still counts against its address's limit (`CLARION_RATE_LIMIT_IP`), and one over it is
    closed with 4029 right after the upgrade, before any `auth` frame."""
    server = Server(tmp_path, {"CLARION_RATE_LIMIT_IP": "3/minute"}).start()
    try:
        codes: list[int | None] = []
        for i in range(5):
            with connect(
                server.ws_url, source_address=("127.0.0.6", 0), open_timeout=10, close_timeout=1
            ) as ws:
                try:
                    ws.send(orjson.dumps({"type": "auth", "token": server.token(f"u{i}")}).decode())
                    orjson.loads(ws.recv(timeout=10))
                    codes.append(None)
                except ConnectionClosed as exc:
                    codes.append(exc.rcvd.code if exc.rcvd else -1)
        assert codes == [None, None, None, 4029, 4029]
    finally:
        server.kill()
