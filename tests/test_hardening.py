"""Issue #13: what an attacker found, each kept fixed through a real server."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import psutil
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from clarion.store import migrate
from clarion.store.db import async_url
from harness.server import BIN, Server
from harness.services import postgres_database
from harness.util import eventually, free_port, user_id
from test_push import ENV as PUSH_ENV
from test_push import Browser, PushService, db, outbox_empty, publish, subscribed

# -- unauthenticated clients cost nothing: request heads and API keys ------------------------


def _raw(server: Server, data: bytes, timeout: float = 5) -> bytes:
    """Send bytes on a fresh connection; what the server answers before closing (or timeout)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            out += chunk
        return out


def test_oversized_headers_are_431(server: Server) -> None:
    huge = {"Authorization": "Bearer " + "a" * (4 << 20)}
    r = httpx.post(server.url + "/v1/notifications", json={"all": True, "title": "x"}, headers=huge)
    assert r.status_code == 431, r.text
    assert r.json()["error"]["code"] == "headers_too_large"
    many = {f"x-h{i}": "1" for i in range(150)}
    assert httpx.get(server.url + "/healthz", headers=many).status_code == 431
    assert httpx.get(server.url + "/healthz").status_code == 200


def test_a_head_that_never_ends_is_refused_as_it_grows(server: Server) -> None:
    """Streamed without its final CRLF, the head is refused once over the limit, not held."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /v1/me/unread-count HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ")
        answer = b""
        for _ in range(40):
            try:
                sock.sendall(b"a" * 4096)
            except OSError:  # closed by the server after its answer
                break
        sock.settimeout(5)
        with_timeout = time.monotonic() + 5
        while time.monotonic() < with_timeout:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 431"), answer[:200]


def test_unknown_api_keys_are_not_remembered(fresh_server: Server) -> None:
    """Every bearer string used to be cached, valid or not: 20 KB each, never released."""
    server = fresh_server.start()
    proc = psutil.Process(server.proc.pid)  # type: ignore[union-attr]

    def forged(n: int) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(n):
                bad = f"clk_{secrets.token_hex(8)}_{'x' * 43}" + "y" * 20_000
                r = client.post(
                    server.url + "/v1/notifications",
                    json={"all": True, "title": "x"},
                    headers={"Authorization": f"Bearer {bad}"},
                )
                assert r.status_code == 401

    forged(100)  # the allocator's arenas warm up
    before = proc.memory_info().rss
    forged(600)  # 12 MB of secrets if each were kept
    grown = proc.memory_info().rss - before
    assert grown < 4 << 20, f"RSS grew {grown >> 10} KiB for 600 refused keys"
    ok = httpx.post(
        server.url + "/v1/notifications",
        json={"all": True, "title": "x"},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert ok.status_code == 201


# -- Web Push endpoints reach only the public internet ---------------------------------------


@pytest.mark.parametrize(
    "host",
    [
        "127.1",
        "0x7f.0.0.1",
        "127.0.0.0x1",
        "2130706433",
        "017700000001",
        "localhost.",
        "push.example.com.",
        "metadata.google.internal",
        "instance-data.ec2.internal",
        "printer.local",
        "169.254.169.254",
        "[::ffff:127.0.0.1]",
        "10.0.0.1",
    ],
)
def test_private_push_endpoints_are_refused_in_any_spelling(server: Server, host: str) -> None:
    browser = Browser(f"https://{host}/push/abc")
    r = httpx.post(
        server.url + "/v1/me/push-subscriptions",
        json=browser.subscription(),
        headers=server.me(user_id()),
    )
    assert r.status_code == 422, (host, r.text)
    assert r.json()["error"]["field"] == "endpoint"


def test_push_checks_the_address_it_connects_to(fresh_server: Server) -> None:
    """An endpoint that leads inside (registered when it did not, or rebound since) is never
    sent to: the sender checks the resolved address, then drops the subscription."""
    service = PushService()
    try:
        fresh_server.env.update(PUSH_ENV)
        server = fresh_server.start()
        user, browser = subscribed(server, service)
        publish(server, user)
        service.wait(browser)  # the loopback stand-in is allowed: it works
        server.kill()
        server.env["CLARION_PUSH_ALLOW_HTTP_LOOPBACK"] = "0"
        server.start()
        publish(server, user)
        eventually(
            lambda: not db(server, "SELECT 1 FROM push_subscriptions"), 15, "the subscription goes"
        )
        outbox_empty(server)
        assert len(service.to(browser)) == 1, "the sender connected to 127.0.0.1"
    finally:
        service.close()


# -- tokens mean what they say: expiry, roles and topics on every transport -----------------


def _ticket(server: Server, token: str) -> str:
    r = httpx.post(server.url + "/v1/tickets", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    ticket: str = r.json()["ticket"]
    return ticket


def _sse_events(resp: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in resp.iter_lines():
        if line.startswith("data: "):
            yield orjson.loads(line[6:])


def test_sse_stream_ends_when_its_token_expires(server: Server) -> None:
    token = server.token(user_id(), ttl=3)
    params = {"ticket": _ticket(server, token)}
    started = time.monotonic()
    with httpx.stream("GET", server.url + "/v1/sse", params=params, timeout=12) as resp:
        events = list(_sse_events(resp))  # until the server ends the stream
    assert time.monotonic() - started < 10, "the stream outlived its token"
    assert events[0]["type"] == "welcome"
    assert events[-1] == {"type": "error", "code": "token_expired", "message": "token expired"}


def test_ticket_does_not_outlive_its_token(server: Server) -> None:
    ticket = _ticket(server, server.token(user_id(), ttl=2))
    time.sleep(2.5)
    r = httpx.get(server.url + "/v1/sse", params={"ticket": ticket}, timeout=5)
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired", r.text


def test_websocket_refresh_without_a_role_stops_that_roles_events(server: Server) -> None:
    user, role = user_id(), "ops-" + secrets.token_hex(3)
    live = server.connect(user, roles=[role])
    try:
        live.drain()
        assert server.publish(roles=[role], title="before").status_code == 201
        assert live.until("notification")["notification"]["title"] == "before"
        live.ws.send(orjson.dumps({"type": "auth", "token": server.token(user)}).decode())
        time.sleep(0.5)
        assert server.publish(roles=[role], title="after").status_code == 201
        assert server.publish(users=[user], title="mine").status_code == 201
        titles = [e["notification"]["title"] for e in live.drain(1) if e["type"] == "notification"]
        assert titles == ["mine"], titles
    finally:
        live.close()


def test_opening_sse_keeps_the_follows_of_the_topics_claim(server: Server) -> None:
    user, topic = user_id(), "proj:" + secrets.token_hex(3)
    token = server.token(user, topics=["proj:*"])
    auth = {"Authorization": f"Bearer {token}"}
    r = httpx.put(server.url + f"/v1/me/topics/{topic}", headers=auth)
    assert r.status_code == 200 and r.json()["following"], r.text
    params = {"ticket": _ticket(server, token)}
    with httpx.stream("GET", server.url + "/v1/sse", params=params, timeout=10) as resp:
        events = _sse_events(resp)
        assert next(events)["type"] == "welcome"
        assert server.publish(topics=[topic], title="on topic").status_code == 201
        kinds = []
        for event in events:
            kinds.append(event["type"])
            if event["type"] == "notification":
                assert event["notification"]["title"] == "on topic"
                break
        assert "unfollow" not in kinds
    followed = httpx.get(server.url + "/v1/me/topics", headers=auth).json()["topics"]
    assert [t["topic"] for t in followed] == [topic]


# -- every bad input is a 4xx naming its field ----------------------------------------------


def _nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels):
        value = {"a": value}
    return value


EDGE_CASES: list[tuple[dict[str, Any], str]] = [
    ({"data": _nested(300)}, "data"),
    ({"data": {"n": 2**70}}, "data"),
    ({"data": {"n": -(2**64)}}, "data"),
    ({"expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
    ({"expires_at": "0001-01-01T00:00:00+14:00"}, "expires_at"),
]


@pytest.mark.parametrize(("extra", "field"), EDGE_CASES)
def test_edge_values_are_422_naming_the_field(
    server: Server, extra: dict[str, Any], field: str
) -> None:
    r = server.publish(users=["u"], **extra)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_a_bad_item_in_a_batch_fails_alone(server: Server) -> None:
    items = [{"users": ["u"], "title": "ok"}] + [
        {"users": ["u"], "title": "bad", **extra} for extra, _ in EDGE_CASES
    ]
    r = httpx.post(
        server.url + "/v1/notifications/batch",
        json={"notifications": items},
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201] + [422] * len(EDGE_CASES)
    fields = [x["error"]["field"] for x in results[1:]]
    assert fields == [f"notifications[{i + 1}].{f}" for i, (_, f) in enumerate(EDGE_CASES)]


def test_nul_characters_are_refused_before_postgresql(tmp_path: Path) -> None:
    """PostgreSQL text cannot hold NUL: it used to be a 503 "store unavailable", and one bad
    publish in a group commit failed its good neighbours."""
    with postgres_database() as url:
        server = Server(tmp_path, {"CLARION_DATABASE_URL": url}).start()
        try:
            _nul_everywhere(server)
        finally:
            server.kill()


def _nul_everywhere(server: Server) -> None:
    key = {"Authorization": f"Bearer {server.api_key}"}
    user = user_id()
    bad_publishes = [
        {"collapse_key": "a\x00b"},
        {"idempotency_key": "k\x00"},
        {"title": "t\x00"},
        {"actor": "x\x00"},
    ]

    def publish(i: int) -> httpx.Response:
        body: dict[str, Any] = {"users": [user], "title": f"good {i}"}
        if i % 10 == 0:
            body.update(bad_publishes[(i // 10) % len(bad_publishes)])
        return server.publish(**body)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(publish, range(80)))
    for i, r in enumerate(answers):
        assert r.status_code == (422 if i % 10 == 0 else 201), (i, r.text)
    ok = httpx.get(server.url + "/v1/me/notifications?limit=100", headers=server.me(user))
    assert len(ok.json()["items"]) == 72

    bad_sub = server.token("a\x00b")
    assert (
        httpx.get(server.url + "/v1/me/unread-count", headers=_bearer(bad_sub)).status_code == 401
    )
    bad_role = server.token(user, roles=["r\x00"])
    assert (
        httpx.get(server.url + "/v1/me/unread-count", headers=_bearer(bad_role)).status_code == 401
    )
    cases = [
        ("GET", "/v1/sse", {"params": {"ticket": "t\x00"}}, 422),
        ("GET", "/v1/poll", {"params": {"since": _cursor({"user:a\x00": 1})}}, 400),
        ("GET", "/v1/poll", {"params": {"since": _cursor({"all": 2**63})}}, 400),
        ("GET", "/v1/topics/t/subscribers", {"params": {"cursor": "c\x00"}, "headers": key}, 422),
    ]
    admin = server.cli("keys", "create", "--scope", "admin", "--name", "admin")
    cases.append(("DELETE", "/v1/keys/ab%00", {"headers": _bearer(admin)}, 422))
    cases.append(("POST", "/v1/keys", {"json": {"name": "n\x00"}, "headers": _bearer(admin)}, 422))
    for method, path, kwargs, status in cases:
        kwargs.setdefault("headers", server.me(user))
        r = httpx.request(method, server.url + path, **kwargs)
        assert r.status_code == status, (path, r.text)
    with connect(server.ws_url) as ws:
        auth = {"type": "auth", "token": server.token(user), "cursor": _cursor({"a\x00": 1})}
        ws.send(orjson.dumps(auth).decode())
        with pytest.raises(ConnectionClosed) as info:
            ws.recv(timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _cursor(position: dict[str, int]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(position)).rstrip(b"=").decode()


# -- live connections are bounded: per user, and by clients that stop reading ---------------


def test_connections_per_user_are_capped(fresh_server: Server) -> None:
    fresh_server.env["CLARION_MAX_CONNECTIONS_PER_USER"] = "3"
    server = fresh_server.start()
    user = user_id()
    held = [server.connect(user) for _ in range(3)]
    try:
        with connect(server.ws_url) as ws:
            ws.send(orjson.dumps({"type": "auth", "token": server.token(user)}).decode())
            with pytest.raises(ConnectionClosed) as info:
                ws.recv(timeout=5)
            assert info.value.rcvd is not None and info.value.rcvd.code == 4029
        r = httpx.get(server.url + "/v1/sse", headers=server.me(user), timeout=5)
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_connections"
        server.connect(user_id()).close()  # others are not affected
        held.pop().close()
        time.sleep(0.3)
        held.append(server.connect(user))  # room again
    finally:
        for live in held:
            live.close()


def test_an_sse_client_that_never_reads_is_let_go(fresh_server: Server) -> None:
    # A batch (225 KB) fits in the buffer: the stream blocks on the socket before it overflows.
    fresh_server.env.update({"CLARION_MAX_BUFFER": "262144", "CLARION_WRITE_TIMEOUT": "2"})
    server = fresh_server.start()
    user = user_id()
    ticket = _ticket(server, server.token(user))
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        sock.sendall(f"GET /v1/sse?ticket={ticket} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        time.sleep(0.5)
        assert httpx.get(server.url + "/readyz").json()["connections"] == 1

        batch = [{"users": [user], "title": "x", "data": {"pad": "x" * 15000}}] * 15
        for _ in range(40):  # 9 MB: past the socket buffers, the transport's and the sink's
            r = httpx.post(
                server.url + "/v1/notifications/batch",
                json={"notifications": batch},
                headers={"Authorization": f"Bearer {server.api_key}"},
                timeout=30,
            )
            assert r.status_code == 200, r.text
        deadline = time.monotonic() + 15
        while httpx.get(server.url + "/readyz").json()["connections"] and (
            time.monotonic() < deadline
        ):
            time.sleep(0.2)
        assert httpx.get(server.url + "/readyz").json()["connections"] == 0


# -- idempotency keys are each publisher's own ----------------------------------------------


def test_idempotency_keys_are_scoped_per_api_key(server: Server) -> None:
    other = server.cli("keys", "create", "--name", "second publisher")
    key, alice, bob = "order-" + secrets.token_hex(4), user_id(), user_id()
    first = server.publish(users=[alice], title="a", idempotency_key=key)
    assert first.status_code == 201, first.text
    second = httpx.post(
        server.url + "/v1/notifications",
        json={"users": [bob], "title": "b", "idempotency_key": key},
        headers=_bearer(other),
    )
    assert second.status_code == 201, second.text
    assert second.json()["id"] != first.json()["id"]
    inbox = httpx.get(server.url + "/v1/me/notifications", headers=server.me(bob)).json()
    assert [n["id"] for n in inbox["items"]] == [second.json()["id"]]
    again = server.publish(users=[alice], title="a", idempotency_key=key)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]


def test_a_reused_idempotency_key_with_another_body_is_409(server: Server) -> None:
    key, user = "k-" + secrets.token_hex(4), user_id()
    assert server.publish(users=[user], title="one", idempotency_key=key).status_code == 201
    r = server.publish(users=[user], title="two", idempotency_key=key)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["field"] == "idempotency_key"
    same = {"users": [user], "title": "x", "idempotency_key": "b-" + key}
    r = httpx.post(
        server.url + "/v1/notifications/batch",
        json={"notifications": [same, same, {**same, "title": "y"}]},
        headers=_bearer(server.api_key),
    )
    assert [x["status"] for x in r.json()["results"]] == [201, 200, 409], r.text


def test_migration_0005_scopes_existing_keys(tmp_path: Path) -> None:
    async def run() -> list[str]:
        engine = create_async_engine(async_url(f"sqlite:///{tmp_path / 'old.db'}"))
        await migrate.upgrade(engine, "0004")
        async with engine.begin() as conn:
            for nid, publisher in (("N1", "abc"), ("N2", None)):
                await conn.execute(
                    text(
                        "INSERT INTO notifications (id, type, priority, doc, created_at,"
                        " publisher) VALUES (:id, 't', 'normal', :doc, :at, :pub)"
                    ),
                    {"id": nid, "doc": b"{}", "at": datetime.now(UTC), "pub": publisher},
                )
                await conn.execute(
                    text(
                        "INSERT INTO idempotency (key, notification_id, result, created_at)"
                        " VALUES (:key, :id, :doc, :at)"
                    ),
                    {"key": "k-" + nid, "id": nid, "doc": b"{}", "at": datetime.now(UTC)},
                )
        await migrate.upgrade(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(text("SELECT key FROM idempotency ORDER BY key"))
            keys = [r[0] for r in rows]
        await engine.dispose()
        return keys

    assert asyncio.run(run()) == ["abc:k-N1", "k-N2"]


# -- hygiene ---------------------------------------------------------------------------------


def test_topics_with_slashes_can_be_followed(server: Server) -> None:
    user, topic = user_id(), f"repo/{secrets.token_hex(3)}/api"
    auth = _bearer(server.token(user, topics=["repo/*"]))
    r = httpx.put(server.url + f"/v1/me/topics/{topic}", headers=auth)
    assert r.status_code == 200 and r.json() == {"topic": topic, "following": True}, r.text
    assert server.publish(topics=[topic], title="t").status_code == 201
    items = httpx.get(server.url + "/v1/me/notifications", headers=auth).json()["items"]
    assert [i["title"] for i in items] == ["t"]
    r = httpx.get(server.url + f"/v1/topics/{topic}/subscribers", headers=_bearer(server.api_key))
    assert r.status_code == 200 and r.json()["users"] == [user], r.text


def test_a_chunked_body_over_the_limit_is_413(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"users": ["u"], "title": "'
        for _ in range(40):
            yield b"x" * 10_000
        yield b'"}'

    headers = {**_bearer(server.api_key), "Content-Type": "application/json"}
    r = httpx.post(server.url + "/v1/notifications", content=chunks(), headers=headers)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large", r.text
    small = httpx.post(
        server.url + "/v1/notifications",
        content=iter([b'{"users": ["u"], ', b'"title": "chunked"}']),
        headers=headers,
    )
    assert small.status_code == 201, small.text


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"body": "x" * 5001}, "body"),
        ({"title": "a\x1b[31mred"}, "title"),
        ({"body": "a\x00"}, "body"),
        ({"url": "javascript:alert(1)"}, "url"),
        ({"url": "JavaScript:alert(1)"}, "url"),
        ({"icon": "data:image/svg+xml,<svg/>"}, "icon"),
        ({"actions": [{"id": "a", "label": "A", "url": "javascript:x"}]}, "actions[0].url"),
        ({"actor": {"name": "n", "avatar": "data:x"}}, "actor.avatar"),
    ],
)
def test_unsafe_or_oversized_text_is_422_naming_the_field(
    server: Server, extra: dict[str, Any], field: str
) -> None:
    r = server.publish(users=["u"], **extra)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_links_that_clients_follow_are_accepted(server: Server) -> None:
    r = server.publish(
        users=["u"],
        body="two\nlines\tand a tab",
        url="/orders/42",
        icon="https://cdn.example.com/i.png",
        actions=[{"id": "a", "label": "A", "url": "http://example.com/a"}],
    )
    assert r.status_code == 201, r.text


def test_tokens_have_a_maximum_lifetime(server: Server) -> None:
    forever = jwt_encode(server, {"sub": "u", "exp": 253402300799})
    r = httpx.get(server.url + "/v1/me/unread-count", headers=_bearer(forever))
    assert r.status_code == 401 and "exp" in r.json()["error"]["message"], r.text


def jwt_encode(server: Server, claims: dict[str, Any]) -> str:
    import jwt

    return jwt.encode(claims, server.secret, algorithm="HS256")


def test_preferences_are_bounded(server: Server) -> None:
    auth = server.me(user_id())

    def put(first: int) -> httpx.Response:
        types = {f"t{i}": {"in_app": False} for i in range(first, first + 150)}
        return httpx.put(server.url + "/v1/me/preferences", json={"types": types}, headers=auth)

    assert put(0).status_code == 200
    r = put(150)
    assert r.status_code == 422 and r.json()["error"]["field"] == "types", r.text
    reset = {f"t{i}": {"in_app": None} for i in range(100)}
    r = httpx.put(server.url + "/v1/me/preferences", json={"types": reset}, headers=auth)
    assert r.status_code == 200
    assert put(150).status_code == 200  # 50 + 150: at the limit
    assert put(1000).status_code == 422


def test_keys_show_their_zone_and_last_use_and_the_last_admin_stays(server: Server) -> None:
    admin = server.cli("keys", "create", "--scope", "admin", "--name", "admin-a")
    keys = httpx.get(server.url + "/v1/keys", headers=_bearer(admin)).json()
    mine = next(k for k in keys if k["name"] == "admin-a")
    assert mine["created_at"].endswith(("Z", "+00:00")), mine
    assert mine["last_used_at"] is not None and mine["last_used_at"].endswith(("Z", "+00:00"))
    admins = [k for k in keys if k["scope"] == "admin" and k["revoked_at"] is None]
    for other in admins:
        if other["id"] != mine["id"]:
            httpx.delete(server.url + f"/v1/keys/{other['id']}", headers=_bearer(admin))
    r = httpx.delete(server.url + f"/v1/keys/{mine['id']}", headers=_bearer(admin))
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin_key", r.text
    second = server.cli("keys", "create", "--scope", "admin", "--name", "admin-b")
    r = httpx.delete(server.url + f"/v1/keys/{mine['id']}", headers=_bearer(second))
    assert r.status_code == 204, r.text


def test_metrics_key_and_retry_after(fresh_server: Server) -> None:
    fresh_server.env.update(
        {"CLARION_METRICS_REQUIRE_KEY": "1", "CLARION_RATE_LIMIT_USER": "3/second"}
    )
    server = fresh_server.start()
    assert httpx.get(server.url + "/metrics").status_code == 401
    admin = server.cli("keys", "create", "--scope", "admin", "--name", "ops")
    assert httpx.get(server.url + "/metrics", headers=_bearer(admin)).status_code == 200
    auth = server.me(user_id())
    answers = [httpx.get(server.url + "/v1/me/unread-count", headers=auth) for _ in range(6)]
    limited = [r for r in answers if r.status_code == 429]
    assert limited and all(r.headers.get("retry-after") == "1" for r in limited)


def test_demo_on_a_public_address_warns(tmp_path: Path) -> None:
    env = {**os.environ, "CLARION_DATABASE_URL": f"sqlite:///{tmp_path / 'demo.db'}"}
    port = str(free_port())
    proc = subprocess.Popen(
        [str(BIN / "clarion"), "serve", "--demo", "--host", "0.0.0.0", "--port", port],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=10)
    assert b"warning" in err and b"loopback" in err, err[-500:]
