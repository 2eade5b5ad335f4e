"""Publishing through the HTTP API: validation, auth, limits, idempotency."""

from __future__ import annotations

import httpx
import pytest

from harness.server import Server
from harness.util import user_id


def test_publish_answers_201_with_the_id(server: Server) -> None:
    u = user_id()
    r = server.publish(users=[u], title="Hi", body="there", type="message", priority="high")
    assert r.status_code == 201, r.text
    body = r.json()
    assert len(body["id"]) == 26 and body["recipients"] == 1
    assert body["streams"] == [f"user:{u}"]
    items = httpx.get(server.url + "/v1/me/notifications", headers=server.me(u)).json()["items"]
    assert [i["id"] for i in items] == [body["id"]]
    assert items[0]["priority"] == "high" and items[0]["type"] == "message"


def test_idempotency_key_replay_creates_nothing(server: Server) -> None:
    u, key = user_id(), user_id()
    first = server.publish(users=[u], idempotency_key=key)
    again = server.publish(users=[u], idempotency_key=key, title="different")
    assert first.status_code == 201 and again.status_code == 200
    assert again.json()["id"] == first.json()["id"] and again.json()["duplicate"] is True
    assert again.json()["streams"] == first.json()["streams"] == [f"user:{u}"]
    items = httpx.get(server.url + "/v1/me/notifications", headers=server.me(u)).json()["items"]
    assert len(items) == 1 and items[0]["title"] == "hello"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"users": ["a"], "title": ""}, "title"),
        ({"users": ["a"], "title": 5}, "title"),
        ({"users": ["a"], "title": "x", "priority": "urgent"}, "priority"),
        ({"users": "a", "title": "x"}, "users"),
        ({"users": ["a", 7], "title": "x"}, "users[1]"),
        ({"users": ["a\nb"], "title": "x"}, "users[0]"),
        ({"users": ["a"], "title": "x", "actions": [{"id": "a", "label": "A"}] * 4}, "actions"),
        ({"users": ["a"], "title": "x", "data": {"k": "v" * 20000}}, "data"),
        ({"users": ["a"], "title": "x", "colour": "red"}, "colour"),
        ({"users": [f"u{i}" for i in range(1001)], "title": "x"}, "users"),
        ({"users": ["a"], "title": "x", "ttl": -1}, "ttl"),
    ],
)
def test_invalid_bodies_name_the_field(server: Server, body: dict[str, object], field: str) -> None:
    r = httpx.post(
        server.url + "/v1/notifications",
        json=body,
        headers={"Authorization": f"Bearer {server.api_key}"},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field


def test_no_audience_is_refused(server: Server) -> None:
    r = server.publish(title="to nobody")
    assert r.status_code == 422 and "audience" in r.json()["error"]["message"]


def test_malformed_json_is_400(server: Server) -> None:
    r = httpx.post(
        server.url + "/v1/notifications",
        content=b'{"users": ["a"], "title": ',
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid"


def test_oversized_body_is_413(server: Server) -> None:
    r = httpx.post(
        server.url + "/v1/notifications",
        content=b'{"title": "' + b"x" * 400_000 + b'"}',
        headers={"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


@pytest.mark.parametrize(
    "header",
    [None, "Bearer nope", "Bearer clk_0000000000000000_forged", "Basic abc", "Bearer"],
)
def test_bad_api_key_is_401(server: Server, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    r = httpx.post(
        server.url + "/v1/notifications", json={"users": ["a"], "title": "x"}, headers=headers
    )
    assert r.status_code == 401, r.text
    assert r.json()["error"]["code"] == "unauthorized"


def test_user_token_cannot_publish(server: Server) -> None:
    r = httpx.post(
        server.url + "/v1/notifications",
        json={"users": ["a"], "title": "x"},
        headers=server.me("a"),
    )
    assert r.status_code == 401


def test_revoked_key_stops_working(server: Server) -> None:
    secret = server.cli("keys", "create", "--name", "short-lived")
    key_id = secret.split("_")[1]
    ok = httpx.post(
        server.url + "/v1/notifications",
        json={"users": ["a"], "title": "x"},
        headers={"Authorization": f"Bearer {secret}"},
    )
    assert ok.status_code == 201
    server.cli("keys", "revoke", key_id)
    import time

    deadline = time.monotonic() + 10  # nodes cache a key check for 5 s
    while time.monotonic() < deadline:
        r = httpx.post(
            server.url + "/v1/notifications",
            json={"users": ["a"], "title": "x"},
            headers={"Authorization": f"Bearer {secret}"},
        )
        if r.status_code == 401:
            return
        time.sleep(0.5)
    pytest.fail("revoked key still accepted after 10 s")


def test_broadcast_is_stored_once_and_reaches_everyone(server: Server) -> None:
    a, b = user_id(), user_id()
    # Users see broadcasts from when Clarion first sees them.
    for u in (a, b):
        httpx.get(server.url + "/v1/me/unread-count", headers=server.me(u))
    r = server.publish(all=True, title="maintenance tonight")
    assert r.status_code == 201 and r.json()["streams"] == ["all"]
    for u in (a, b):
        items = httpx.get(server.url + "/v1/me/notifications", headers=server.me(u)).json()["items"]
        assert r.json()["id"] in [i["id"] for i in items]
