"""A hypothesis fuzzer for WebSocket frames and cursors, against a real node: whatever a client
sends first (text, binary, JSON of any shape, any cursor), the server answers `welcome` or
closes with a code of docs/protocol.md, stays up for everyone else, and logs no traceback."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.server import Server

DOCUMENTED = {1000, 1002, 1007, 1009, 4000, 4001, 4002, 4003, 4029}
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what JSON encoders write
    | st.floats(allow_nan=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
positions = st.dictionaries(
    st.text(min_size=1, max_size=300), st.integers(min_value=-1, max_value=2**64), max_size=5
)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {"CLARION_RATE_LIMIT_IP": "100000/second", "CLARION_AUTH_TIMEOUT": "2"}
    server = Server(Path(tmp_path_factory.mktemp("wsfuzz")), env).start()
    yield server
    server.kill(signal.SIGTERM)


def _cursor(position: dict[str, int]) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(position).encode()).rstrip(b"=").decode()


def frames(server: Server) -> st.SearchStrategy[str | bytes]:
    token = st.sampled_from([server.token("fuzz"), "x", ""]) | st.text(max_size=50)
    cursor = positions.map(_cursor) | st.text(max_size=100) | json_values
    auth = st.fixed_dictionaries(
        {"type": st.just("auth"), "token": token}, optional={"cursor": cursor}
    )
    objects = auth | st.dictionaries(st.sampled_from(["type", "token", "cursor", "x"]), json_values)
    return (
        objects.map(lambda o: orjson.dumps(o).decode())
        | st.text(max_size=200)
        | st.binary(max_size=200)
    )


def answer(server: Server, frame: str | bytes) -> tuple[str, Any]:
    with connect(server.ws_url, open_timeout=10, close_timeout=2) as ws:
        ws.send(frame)
        try:
            event = orjson.loads(ws.recv(timeout=10))
        except ConnectionClosed as exc:
            return "closed", exc.rcvd.code if exc.rcvd else None
        return "event", event["type"]


@pytest.mark.timeout(600)
def test_any_first_frame_is_welcomed_or_closed_as_documented(node: Server) -> None:
    @given(frame=frames(node))
    @settings(
        max_examples=150,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def run(frame: str | bytes) -> None:
        kind, value = answer(node, frame)
        if kind == "event":
            assert value == "welcome", (frame, value)
        else:
            assert value in DOCUMENTED, (frame, value)

    run()
    assert httpx.get(node.url + "/readyz").status_code == 200
    live = node.connect("after-fuzz")
    live.close()
    assert "Traceback" not in node.log(), node.log()[-3000:]
