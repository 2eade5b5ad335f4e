"""Structured logs (logs.py, access.py): one access line per request and per live session end,
an audit line per admin change, request ids, and no secret anywhere in the log."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clarion import logs
from clarion.config import ConfigError, load_settings
from harness.server import Server
from harness.services import node_database
from harness.util import eventually, send, user_id


@pytest.fixture(scope="module")
def json_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("logs"), {**env, "CLARION_LOG_FORMAT": "json"})
        srv.start("--log-level", "info")
        srv.admin_key = srv.cli("keys", "create", "--scope", "admin", "--name", "ops")  # type: ignore[attr-defined]
        yield srv
        srv.kill(signal.SIGTERM)


def lines(server: Server) -> list[dict[str, Any]]:
    """Every line the server wrote (stdout and stderr), each of which must be one JSON object:
    the CLI's own banner too gives way to a log line."""
    return [orjson.loads(line) for line in server.log().splitlines() if line.strip()]


def find(server: Server, **fields: Any) -> list[dict[str, Any]]:
    return [doc for doc in lines(server) if all(doc.get(k) == v for k, v in fields.items())]


def test_request_line_has_who_status_and_the_callers_request_id(json_server: Server) -> None:
    r = httpx.post(
        json_server.url + "/v1/notifications",
        json={"users": [user_id()], "title": "hi"},
        headers={"Authorization": f"Bearer {json_server.api_key}", "X-Request-ID": "req-abc.1"},
    )
    assert r.status_code == 201
    assert r.headers["x-request-id"] == "req-abc.1"
    key_id = json_server.api_key.split("_")[1]
    eventually(lambda: find(json_server, request_id="req-abc.1", event="request"), what="line")
    (doc,) = find(json_server, request_id="req-abc.1", event="request")
    assert doc["method"] == "POST" and doc["path"] == "/v1/notifications"
    assert doc["status"] == 201 and doc["who"] == f"key:{key_id}"
    assert doc["duration_ms"] >= 0 and doc["level"] == "info" and doc["logger"] == "clarion.access"
    (serving,) = find(json_server, logger="clarion.app")
    assert serving["message"].startswith("serving: database ")


def test_a_bad_request_id_is_replaced_and_refusals_are_logged(json_server: Server) -> None:
    r = httpx.get(json_server.url + "/v1/me/unread-count", headers={"X-Request-ID": "a b/c;d"})
    assert r.status_code == 401
    rid = r.headers["x-request-id"]
    assert rid != "a b/c;d" and rid.isalnum()
    eventually(lambda: find(json_server, request_id=rid, status=401), what="the 401 line")


def test_each_live_session_ends_with_one_line(json_server: Server) -> None:
    user = user_id()
    live = json_server.connect(user)
    send(json_server, users=[user], title="one")
    assert live.until("notification")["notification"]["title"] == "one"
    cursor = live.cursor
    live.close()
    me = json_server.me(user)
    ticket = httpx.post(json_server.url + "/v1/tickets", headers=me).json()["ticket"]
    with httpx.stream("GET", json_server.url + f"/v1/sse?ticket={ticket}", timeout=10) as r:
        for line in r.iter_lines():
            if line.startswith("event: welcome") or '"welcome"' in line:
                break
    r = httpx.get(json_server.url + "/v1/poll", params={"since": cursor, "timeout": 0}, headers=me)
    assert r.status_code == 200

    def ended() -> dict[str, dict[str, Any]]:
        return {d["transport"]: d for d in find(json_server, event="session", user=user)}

    eventually(lambda: len(ended()) == 3, what="websocket, sse and poll session lines")
    sessions = ended()
    assert sessions["websocket"]["events_sent"] >= 3  # welcome, unread, the notification
    assert sessions["websocket"]["close_code"] is None  # the client closed it
    assert sessions["sse"]["events_sent"] >= 1 and sessions["poll"]["duration_ms"] >= 0
    for doc in sessions.values():
        assert doc["request_id"] and doc["duration_ms"] >= 0
    # The ticket travelled in the query string: the SSE request line names the path only.
    assert any(d["path"] == "/v1/sse" for d in find(json_server, event="request"))
    assert ticket not in json_server.log()


def test_a_websocket_session_line_carries_the_callers_request_id(json_server: Server) -> None:
    """The upgrade's `X-Request-ID` follows the WebSocket to its session line (the upgrade is
    answered by the HTTP protocol, and the session starts in a task of its own)."""
    user = user_id()
    with connect(json_server.ws_url, additional_headers={"X-Request-ID": "trace-ws-1"}) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": json_server.token(user)}).decode())
        assert orjson.loads(ws.recv(timeout=10))["type"] == "welcome"
    eventually(lambda: find(json_server, event="session", user=user), what="the session line")
    (doc,) = find(json_server, event="session", user=user)
    assert doc["request_id"] == "trace-ws-1"


def test_a_session_the_server_closes_logs_its_close_code(json_server: Server) -> None:
    user = user_id()
    with connect(json_server.ws_url) as ws:
        ws.send(orjson.dumps({"type": "auth", "token": json_server.token(user, ttl=2)}).decode())
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                ws.recv(timeout=15)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4002  # token expired
    eventually(lambda: find(json_server, event="session", user=user), what="the session line")
    (doc,) = find(json_server, event="session", user=user)
    assert doc["transport"] == "websocket" and doc["close_code"] == 4002


def test_admin_changes_are_audited_with_before_and_after(json_server: Server) -> None:
    admin = {"Authorization": f"Bearer {json_server.admin_key}"}  # type: ignore[attr-defined]
    admin_id = json_server.admin_key.split("_")[1]  # type: ignore[attr-defined]
    r = httpx.post(json_server.url + "/v1/keys", json={"name": "temp"}, headers=admin)
    created = r.json()
    assert httpx.delete(json_server.url + f"/v1/keys/{created['id']}", headers=admin).status_code
    rule = {"in_app": True, "push": False, "mandatory": False}
    assert httpx.put(json_server.url + "/v1/types/audited", json=rule, headers=admin).is_success
    rule["push"] = True
    assert httpx.put(json_server.url + "/v1/types/audited", json=rule, headers=admin).is_success
    eventually(lambda: len(find(json_server, event="audit", target="type:audited")) == 2)
    (create,) = find(json_server, event="audit", action="key.create")
    assert create["who"] == admin_id and create["before"] is None
    assert create["after"]["id"] == created["id"] and "secret" not in create["after"]
    (revoke,) = find(json_server, event="audit", action="key.revoke")
    assert revoke["before"]["revoked_at"] is None and revoke["after"]["revoked"] is True
    first, second = find(json_server, event="audit", target="type:audited")
    assert first["before"] is None and second["before"]["push"] is False
    assert second["after"]["push"] is True and second["logger"] == "clarion.audit"
    assert created["secret"] not in json_server.log()


def test_no_secret_ever_reaches_the_log(json_server: Server) -> None:
    """After every test above: no API key, token, ticket or cookie value in any line."""
    user = user_id()
    token = json_server.token(user)
    httpx.get(
        json_server.url + "/v1/me/unread-count",
        headers={"Authorization": f"Bearer {token}", "Cookie": "clarion_console=s3cr3tcookie"},
    )
    httpx.get(json_server.url + f"/v1/poll?access_token={token}")
    text = json_server.log()
    eventually(lambda: "/v1/poll" in json_server.log(), what="the poll line")
    for secret in (json_server.api_key, json_server.admin_key, token, "s3cr3tcookie"):  # type: ignore[attr-defined]
        assert secret not in text
    assert "clk_" not in text and "Bearer" not in text


def test_text_format_is_the_default_and_carries_the_fields() -> None:
    assert load_settings().log_format == "text"
    config = logs.config("text", "info")
    formatter = logs.TextFormatter()
    assert config["formatters"]["main"]["()"] == "clarion.logs.TextFormatter"
    record = logging.LogRecord("clarion.access", logging.INFO, "", 0, "GET /healthz 200", (), None)
    record.fields = {"event": "request", "status": 200, "who": None}
    line = formatter.format(record)
    assert line.endswith("INFO clarion.access: GET /healthz 200 event=request status=200 who=null")
    with pytest.raises(ConfigError, match="CLARION_LOG_FORMAT"):
        load_settings(log_format="yaml")
