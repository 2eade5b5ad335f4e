"""One origin policy for CORS and for live connections; the server's own origin always passes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clarion.auth import origin_allowed
from harness.server import Server

OTHER_PAGE = "http://127.0.0.1:9000"  # the README's page on a second origin
APP = "https://app.example.com"


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A node with an explicit allow-list that names neither loopback nor itself."""
    env = {"CLARION_ALLOWED_ORIGINS": APP}
    srv = Server(tmp_path_factory.mktemp("listed"), env).start("--demo")
    yield srv
    srv.kill()


def test_policy() -> None:
    host = "clarion.example.com"
    assert origin_allowed(None, host, [APP])  # not a browser: credentials decide
    assert origin_allowed("https://clarion.example.com", host, [APP])  # its own pages
    assert origin_allowed(APP, host, [APP])
    assert not origin_allowed("http://127.0.0.1:9000", host, [APP])
    assert origin_allowed("http://127.0.0.1:9000", host, [])
    assert origin_allowed("http://[::1]:3000", None, [])
    assert not origin_allowed("https://evil.example", host, [])
    assert origin_allowed("https://evil.example", host, ["*"])


def _welcome(server: Server, origin: str) -> dict[str, object] | int:
    """The first event of a WebSocket opened from `origin`, or the close code."""
    with connect(server.ws_url, origin=origin) as ws:  # type: ignore[arg-type]
        try:
            ws.send(orjson.dumps({"type": "auth", "token": server.token("alice")}).decode())
            event: dict[str, object] = orjson.loads(ws.recv(timeout=10))
            return event
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code


def test_default_allows_a_loopback_page_by_cors_and_live(server: Server) -> None:
    """The README's snippet: a page on :9000 loads the widget and calls the inbox API."""
    script = httpx.get(server.url + "/static/clarion-inbox.js", headers={"Origin": OTHER_PAGE})
    assert script.headers.get("access-control-allow-origin") == OTHER_PAGE
    preflight = httpx.options(
        server.url + "/v1/me/notifications",
        headers={
            "Origin": OTHER_PAGE,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == OTHER_PAGE
    inbox = httpx.get(
        server.url + "/v1/me/unread-count", headers={**server.me("alice"), "Origin": OTHER_PAGE}
    )
    assert inbox.headers.get("access-control-allow-origin") == OTHER_PAGE
    welcome = _welcome(server, OTHER_PAGE)
    assert isinstance(welcome, dict) and welcome["type"] == "welcome"


def test_default_refuses_a_foreign_page_by_cors(server: Server) -> None:
    evil = "https://evil.example"
    r = httpx.get(server.url + "/v1/me/unread-count", headers={**server.me("a"), "Origin": evil})
    assert "access-control-allow-origin" not in r.headers
    preflight = httpx.options(
        server.url + "/v1/me/notifications",
        headers={"Origin": evil, "Access-Control-Request-Method": "GET"},
    )
    assert preflight.status_code == 400
    assert _welcome(server, evil) == 4003


def test_allow_list_keeps_the_servers_own_pages_live(listed: Server) -> None:
    assert isinstance(_welcome(listed, listed.url), dict)  # the demo page, on the server itself
    assert isinstance(_welcome(listed, APP), dict)
    assert _welcome(listed, OTHER_PAGE) == 4003  # loopback is no longer implied
    own = httpx.get(
        listed.url + "/v1/poll",
        params={"timeout": 0},
        headers={**listed.me("alice"), "Origin": listed.url},
    )
    assert own.status_code == 200
    app = httpx.get(listed.url + "/v1/me/unread-count", headers={**listed.me("a"), "Origin": APP})
    assert app.headers.get("access-control-allow-origin") == APP
    other = httpx.get(
        listed.url + "/v1/me/unread-count", headers={**listed.me("a"), "Origin": OTHER_PAGE}
    )
    assert "access-control-allow-origin" not in other.headers


def test_comma_separated_list(tmp_path: Path) -> None:
    srv = Server(tmp_path, {"CLARION_ALLOWED_ORIGINS": f"{APP}, http://localhost:5173/"}).start()
    try:
        assert isinstance(_welcome(srv, "http://localhost:5173"), dict)
        assert isinstance(_welcome(srv, APP), dict)
        assert _welcome(srv, OTHER_PAGE) == 4003
    finally:
        srv.kill()
