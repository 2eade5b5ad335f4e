"""The console's API (api/console.py, api/console_session.py) over HTTP: off by default,
sign-in, the cookie, CSRF, revocation, and the searches behind the Notifications page."""

from __future__ import annotations

import signal
from collections.abc import Iterator

import httpx
import pytest

from harness.server import Server
from harness.services import node_database
from harness.util import eventually, send, user_id


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("console-api"), {**env, "CLARION_CONSOLE": "true"})
        srv.start()
        srv.admin_key = srv.cli("keys", "create", "--scope", "admin", "--name", "ops")  # type: ignore[attr-defined]
        yield srv
        srv.kill(signal.SIGTERM)


def signed_in(server: Server, key: str) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=10)
    r = client.post("/console/api/session", json={"key": key})
    assert r.status_code == 200, r.text
    return client, r.json()["csrf"]


def test_off_by_default(server: Server) -> None:
    assert httpx.get(server.url + "/console").status_code == 404
    r = httpx.post(server.url + "/console/api/session", json={"key": server.api_key})
    assert r.status_code == 404


def test_sign_in_sets_a_strict_http_only_cookie(console: Server) -> None:
    r = httpx.post(console.url + "/console/api/session", json={"key": console.admin_key})  # type: ignore[attr-defined]
    assert r.status_code == 200
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("clarion_console=") and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/" in cookie and "Secure" not in cookie
    assert console.admin_key not in cookie  # type: ignore[attr-defined]
    assert r.json()["key"]["name"] == "ops" and r.json()["csrf"]
    page = httpx.get(console.url + "/console")
    assert page.status_code == 200 and "clarion-console" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_only_admin_keys_sign_in(console: Server) -> None:
    post = lambda key: httpx.post(console.url + "/console/api/session", json={"key": key})  # noqa: E731
    r = post(console.api_key)
    assert r.status_code == 403 and "admin scope" in r.json()["error"]["message"]
    assert post("clk_nope").status_code == 401
    assert post("").status_code == 422
    assert "set-cookie" not in post(console.api_key).headers


def test_reads_need_the_cookie_and_changes_the_csrf_token(console: Server) -> None:
    assert httpx.get(console.url + "/console/api/live").status_code == 401
    client, csrf = signed_in(console, console.admin_key)  # type: ignore[attr-defined]
    live = client.get("/console/api/live").json()
    assert {"connections", "transports", "published", "broker", "outbox"} <= set(live)
    body = {"name": "made-in-console"}
    r = client.post("/v1/keys", json=body)
    assert r.status_code == 403
    assert r.json()["error"] == {
        "code": "csrf",
        "message": "missing or wrong CSRF token",
        "field": "X-CSRF-Token",
    }
    assert (
        client.post("/v1/keys", json=body, headers={"X-CSRF-Token": "x" + csrf}).status_code == 403
    )
    r = client.post("/v1/keys", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201 and r.json()["secret"].startswith("clk_")
    # A publish in the console's name (its "send a test" form) is a change too.
    test = {"users": [user_id()], "title": "test"}
    assert client.post("/v1/notifications", json=test).status_code == 403
    assert client.post("/v1/notifications", json=test, headers={"X-CSRF-Token": csrf}).is_success
    tampered = client.cookies["clarion_console"].replace(".", ".9", 1)
    r = httpx.get(console.url + "/console/api/live", cookies={"clarion_console": tampered})
    assert r.status_code == 401


def test_live_reads_the_cluster_and_every_outbox(console: Server) -> None:
    client, _ = signed_in(console, console.admin_key)  # type: ignore[attr-defined]
    tab = console.connect(user_id())
    tab.until("unread")

    def reported() -> bool:
        c = client.get("/console/api/live").json()["cluster"]
        return bool(c and c["nodes"] and c["connections"]["websocket"] >= 1)

    eventually(reported, what="this node's snapshot with its WebSocket")  # one a second
    live = client.get("/console/api/live").json()
    (node,) = live["cluster"]["nodes"]
    assert node["node"] == live["node"] and node["age"] < 3
    assert set(live["outbox"]) == {"push", "email", "webhook"}
    assert set(live["outbox"]["email"]) == {"due", "oldest_due_seconds", "pending"}
    tab.close()


def test_revoking_the_key_ends_its_sessions(console: Server) -> None:
    second = console.cli("keys", "create", "--scope", "admin", "--name", "temp-admin")
    client, _ = signed_in(console, second)
    assert client.get("/console/api/live").status_code == 200
    first, first_csrf = signed_in(console, console.admin_key)  # type: ignore[attr-defined]
    key_id = second.split("_")[1]
    assert (
        first.delete(f"/v1/keys/{key_id}", headers={"X-CSRF-Token": first_csrf}).status_code == 204
    )
    r = client.get("/console/api/live")
    assert r.status_code == 401 and "revoked or expired" in r.json()["error"]["message"]
    assert (
        first.delete("/console/api/session", headers={"X-CSRF-Token": first_csrf}).status_code
        == 204
    )
    assert "clarion_console" not in first.cookies


def test_searches_find_by_each_field_and_page(console: Server) -> None:
    client, _ = signed_in(console, console.admin_key)  # type: ignore[attr-defined]
    user, topic, kind = user_id(), "proj-" + user_id(), "kind-" + user_id()
    mine = [send(console, users=[user], title=f"n{i}", type=kind) for i in range(5)]
    shared = send(console, topics=[topic], title="to a topic", idempotency_key="idem-" + user)

    def ids(**params: str) -> tuple[list[str], dict[str, object]]:
        page = client.get("/console/api/notifications", params=params).json()
        return [n["id"] for n in page["items"]], page

    assert ids(by="id", q=mine[2].lower())[0] == [mine[2]]
    assert ids(by="idempotency_key", q="idem-" + user)[0] == [shared]
    assert ids(by="topic", q=topic)[0] == [shared]
    found, page = ids(by="type", q=kind, limit="10")
    assert found == mine[::-1] and "latest" in str(page["note"])
    first, page = ids(by="user", q=user, limit="3")
    assert first == mine[:1:-1] and page["next"]
    rest, page = ids(by="user", q=user, limit="3", before=str(page["next"]))
    assert rest == mine[1::-1] and page["next"] is None
    latest, page = ids(limit="2")
    older, _ = ids(limit="2", before=str(page["next"]))
    assert latest[0] == shared and not set(latest) & set(older) and older[0] < latest[-1]
    r = client.get("/console/api/notifications", params={"by": "user", "q": ""})
    assert r.status_code == 400 and r.json()["error"]["field"] == "q"
    detail = client.get(f"/console/api/notifications/{mine[0]}").json()
    assert detail["streams"] == [f"user:{user}"] and detail["states"] == []
    assert client.get("/console/api/notifications/0NOPE").status_code == 404
    u = client.get(f"/console/api/users/{user}").json()
    assert u["unread"] == 5 and [n["id"] for n in u["items"]] == mine[::-1]
