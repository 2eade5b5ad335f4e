"""Web Push through real nodes and a push service stand-in on loopback.

The stand-in receives Clarion's POSTs as a push service would: it checks the VAPID token
(`Authorization: vapid t=<ES256 JWT>,k=<key>`, audience = the endpoint's origin) and decrypts
the aes128gcm body with the private key and auth secret that a browser would hold (made here
with `cryptography`, decrypted with `http_ece`). What it answers is scripted per browser.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import secrets
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import http_ece
import httpx
import jwt
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from harness.server import Server
from harness.services import node_database
from harness.util import eventually, user_id

ENV = {
    "CLARION_PUSH_ALLOW_HTTP_LOOPBACK": "1",
    "CLARION_PUSH_RETRY_SECONDS": "0.2",
    "CLARION_PUSH_MAX_ATTEMPTS": "3",
    "CLARION_PUSH_INTERVAL": "0.2",
    "CLARION_PUSH_TIMEOUT": "1.5",  # a sender's lease on a push: 3 s
}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Push:
    browser: Browser
    headers: dict[str, str]
    payload: dict[str, Any]
    claims: dict[str, Any]
    key: str  # the VAPID public key the request was signed with


@dataclass
class Browser:
    """What a browser holds after `pushManager.subscribe()`."""

    endpoint: str
    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))
    answers: list[int | str] = field(default_factory=list)  # scripted, in turn; then 201

    def subscription(self) -> dict[str, Any]:
        point = self.private_key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


class PushService:
    """A push service on a free loopback port. Each POST is checked, decrypted and recorded
    before it is answered, so once Clarion's outbox is empty every push it sent is here."""

    def __init__(self) -> None:
        self.browsers: dict[str, Browser] = {}
        self.pushes: list[Push] = []
        self.errors: list[str] = []
        self.cond = threading.Condition()
        self.release = threading.Event()  # answers scripted "hold" once set
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = service.receive(self.path, dict(self.headers.items()), body)
                if answer == "hold":
                    service.release.wait(30)
                    answer = 201
                self.send_response(int(answer))
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def browser(self, *answers: int | str) -> Browser:
        path = "/push/" + secrets.token_urlsafe(12)
        browser = Browser(self.origin + path, answers=list(answers))
        self.browsers[path] = browser
        return browser

    def receive(self, path: str, headers: dict[str, str], body: bytes) -> int | str:
        browser = self.browsers.get(path)
        if browser is None:
            return 404
        try:
            scheme, _, params = headers["Authorization"].partition(" ")
            assert scheme == "vapid", scheme
            parts = dict(p.split("=", 1) for p in params.split(","))
            key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(parts["k"]))
            claims = jwt.decode(parts["t"], key, algorithms=["ES256"], audience=self.origin)
            assert claims["exp"] <= time.time() + 24 * 3600, "VAPID exp over 24 h"
            assert claims["sub"].startswith(("mailto:", "https:")), claims
            assert headers["Content-Encoding"] == "aes128gcm"
            plain = http_ece.decrypt(
                body, private_key=browser.private_key, auth_secret=browser.auth, version="aes128gcm"
            )
            push = Push(browser, headers, orjson.loads(plain), claims, parts["k"])
        except Exception as exc:  # reported by the tests, not by a crash of this thread
            with self.cond:
                self.errors.append(f"{type(exc).__name__}: {exc}")
                self.cond.notify_all()
            return 400
        with self.cond:
            self.pushes.append(push)
            self.cond.notify_all()
        return browser.answers.pop(0) if browser.answers else 201

    def to(self, browser: Browser) -> list[Push]:
        with self.cond:
            return [p for p in self.pushes if p.browser is browser]

    def wait(self, browser: Browser, count: int = 1, timeout: float = 15) -> list[Push]:
        """Until `browser` was sent `count` pushes (bounded)."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(got := [p for p in self.pushes if p.browser is browser]) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"{len(got)}/{count} pushes arrived; errors: {self.errors}"
                self.cond.wait(left)
            assert not self.errors, self.errors
            return got

    def close(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def service() -> Iterator[PushService]:
    svc = PushService()
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A node of this module's own (CLARION_TEST_DATABASE=postgres: on PostgreSQL)."""
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("push"), {**ENV, **env}).start()
        yield srv
        srv.kill(signal.SIGTERM)


# -- helpers ------------------------------------------------------------------------------------


def db(server: Server, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Read the node's database (`?` placeholders, datetimes as aware UTC)."""
    url = server.env["CLARION_DATABASE_URL"]
    if url.startswith("postgres"):
        import asyncpg

        numbers = itertools.count(1)
        query = re.sub(r"\?", lambda _: f"${next(numbers)}", sql)

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(url)
            try:
                return [tuple(r) for r in await conn.fetch(query, *args)]
            finally:
                await conn.close()

        return asyncio.run(run())
    # SQLAlchemy keeps SQLite datetimes as UTC text, which compares as strings.
    plain = [a.strftime("%Y-%m-%d %H:%M:%S.%f") if isinstance(a, datetime) else a for a in args]
    with sqlite3.connect(server.workdir / "clarion.db", timeout=10) as conn:
        return conn.execute(sql, plain).fetchall()


def outbox_empty(server: Server) -> None:
    """Every push queued so far was sent or given up (only pushes held for quiet hours, never
    tried, are left): the stand-in has seen all it will."""
    pending = "SELECT 1 FROM push_outbox WHERE due_at <= ? OR attempts > 0"
    eventually(lambda: not db(server, pending, datetime.now(UTC)), 15, "the outbox to empty")


def subscribe(server: Server, user: str, browser: Browser) -> httpx.Response:
    return httpx.post(
        server.url + "/v1/me/push-subscriptions",
        json=browser.subscription(),
        headers=server.me(user),
        timeout=10,
    )


def subscribed(server: Server, service: PushService, *answers: int | str) -> tuple[str, Browser]:
    user, browser = user_id(), service.browser(*answers)
    r = subscribe(server, user, browser)
    assert r.status_code == 201, r.text
    return user, browser


def publish(server: Server, user: str, **body: Any) -> str:
    body.setdefault("priority", "high")
    r = server.publish(users=[user], **body)
    assert r.status_code == 201, r.text
    nid: str = r.json()["id"]
    return nid


def ids(pushes: list[Push]) -> list[str]:
    return [p.payload["id"] for p in pushes]


def preferences(server: Server, user: str, body: dict[str, Any]) -> None:
    r = httpx.put(server.url + "/v1/me/preferences", json=body, headers=server.me(user), timeout=10)
    assert r.status_code == 200, r.text


def vapid_key(server: Server) -> str:
    r = httpx.get(server.url + "/v1/push/vapid-public-key", timeout=10)
    assert r.status_code == 200, r.text
    key: str = r.json()["public_key"]
    return key


# -- tests --------------------------------------------------------------------------------------


def test_high_notification_is_pushed_once_with_its_content(
    node: Server, service: PushService
) -> None:
    user, browser = subscribed(node, service)
    nid = publish(
        node,
        user,
        type="deploy",
        title="Deploy failed",
        body="web@4f2c1a: 3 checks red",
        url="https://app.example/deploys/7",
        icon="https://app.example/icon.png",
        data={"big": "x" * 2000},  # not part of a push
        collapse_key="deploy:web",
    )
    [push] = service.wait(browser)
    assert push.payload == {
        "id": nid,
        "type": "deploy",
        "priority": "high",
        "title": "Deploy failed",
        "body": "web@4f2c1a: 3 checks red",
        "url": "https://app.example/deploys/7",
        "icon": "https://app.example/icon.png",
    }
    assert push.claims["aud"] == service.origin
    assert push.key == vapid_key(node)
    assert push.headers["Urgency"] == "high"
    assert 0 < int(push.headers["TTL"]) <= 86400
    assert len(push.headers["Topic"]) <= 32  # the collapse key, hashed
    outbox_empty(node)
    assert ids(service.to(browser)) == [nid]


def test_low_normal_and_shared_notifications_are_not_pushed(
    node: Server, service: PushService
) -> None:
    user, browser = subscribed(node, service)
    quiet = [
        publish(node, user, priority="low", title="low"),
        publish(node, user, priority="normal", title="normal"),
    ]
    r = node.publish(all=True, priority="critical", title="to everyone")
    assert r.status_code == 201
    quiet.append(r.json()["id"])
    loud = publish(node, user, priority="critical", title="critical")
    queued = "SELECT count(*) FROM push_outbox WHERE notification_id IN (?, ?, ?)"
    assert db(node, queued, *quiet) == [(0,)]  # committed with the 201: none was queued
    assert service.wait(browser)[0].payload["id"] == loud
    outbox_empty(node)
    assert ids(service.to(browser)) == [loud]


def test_push_preferences_are_respected(node: Server, service: PushService) -> None:
    user, browser = subscribed(node, service)
    preferences(node, user, {"types": {"chat": {"push": False}}})
    admin = node.cli("keys", "create", "--scope", "admin", "--name", "push-admin")
    r = httpx.put(
        node.url + "/v1/types/newsletter",
        json={"push": False},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    publish(node, user, type="chat", title="opted out")
    publish(node, user, type="newsletter", title="off by the app's default")
    pushed = publish(node, user, type="deploy", title="on")
    service.wait(browser)
    outbox_empty(node)
    assert ids(service.to(browser)) == [pushed]


def test_quiet_hours_hold_push_until_they_end_but_not_critical(
    node: Server, service: PushService
) -> None:
    user, browser = subscribed(node, service)
    zone = "Asia/Tokyo"
    local = datetime.now(ZoneInfo(zone))
    window = {
        "start": (local - timedelta(hours=1)).strftime("%H:%M"),
        "end": (local + timedelta(hours=2)).strftime("%H:%M"),
    }
    preferences(node, user, {"timezone": zone, "quiet_hours": window})
    held = publish(node, user, title="held")
    critical = publish(node, user, priority="critical", title="goes through")
    assert ids(service.wait(browser)) == [critical]
    [(due,)] = db(node, "SELECT due_at FROM push_outbox WHERE notification_id = ?", held)
    if isinstance(due, str):  # SQLite
        due = datetime.fromisoformat(due).replace(tzinfo=UTC)
    assert due > datetime.now(UTC) + timedelta(hours=1)
    outbox_empty(node)
    assert ids(service.to(browser)) == [critical]
    # The quiet hours end (here: the user clears them): the held push goes out.
    preferences(node, user, {"clear_quiet_hours": True})
    assert ids(service.wait(browser, 2)) == [critical, held]


def test_gone_subscription_is_removed(node: Server, service: PushService) -> None:
    user, browser = subscribed(node, service, 410)
    _, other = subscribed(node, service)
    assert subscribe(node, user, other).status_code == 201  # a second browser of the user
    nid = publish(node, user)
    service.wait(browser)
    service.wait(other)

    def gone() -> bool:
        rows = db(node, "SELECT endpoint FROM push_subscriptions WHERE user_id = ?", user)
        return rows == [(other.endpoint,)]

    eventually(gone, 15, "the 410 subscription to be removed")
    second = publish(node, user)
    assert ids(service.wait(other, 2)) == [nid, second]
    outbox_empty(node)
    assert ids(service.to(browser)) == [nid]


def push_log(server: Server, nid: str, user: str) -> dict[str, Any]:
    """The `push` states of the notification's delivery log for `user` (docs/control.md)."""
    r = httpx.get(
        f"{server.url}/v1/notifications/{nid}/deliveries",
        headers={"Authorization": f"Bearer {server.api_key}"},
        timeout=10,
    )
    for row in r.json()["recipients"]:
        if row["user"] == user and row["channel"] == "push":
            return {s["state"]: s for s in row["states"]}
    return {}


def test_server_errors_are_retried_then_given_up(node: Server, service: PushService) -> None:
    user, browser = subscribed(node, service, 500, 503)
    nid = publish(node, user)
    assert ids(service.wait(browser, 3)) == [nid, nid, nid]  # 500, 503, then 201
    outbox_empty(node)
    eventually(lambda: "pushed" in push_log(node, nid, user), 15, "pushed in the delivery log")
    # Always failing: given up after CLARION_PUSH_MAX_ATTEMPTS (3) attempts.
    user, failing = subscribed(node, service, 500, 500, 500, 500)
    nid = publish(node, user)
    eventually(
        lambda: not db(node, "SELECT 1 FROM push_outbox WHERE notification_id = ?", nid),
        15,
        "the failing push to be given up",
    )
    assert ids(service.to(failing)) == [nid, nid, nid]
    eventually(lambda: "failed" in push_log(node, nid, user), 15, "failed in the delivery log")
    assert push_log(node, nid, user)["failed"]["detail"] == "HTTP 500"


def test_subscriptions_are_validated_naming_the_field(node: Server, service: PushService) -> None:
    user = user_id()
    good = service.browser().subscription()

    def post(body: Any) -> httpx.Response:
        return httpx.post(
            node.url + "/v1/me/push-subscriptions", json=body, headers=node.me(user), timeout=10
        )

    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "endpoint": "http://push.example/x"}, "endpoint"),
        ({**good, "endpoint": "https://10.1.2.3/x"}, "endpoint"),
        ({**good, "endpoint": "https://localhost/x"}, "endpoint"),
        ({**good, "endpoint": "ftp://push.example/x"}, "endpoint"),
        ({**good, "keys": {"auth": good["keys"]["auth"]}}, "keys.p256dh"),
        ({**good, "keys": {**good["keys"], "p256dh": b64url(b"\x04" + b"1" * 64)}}, "keys.p256dh"),
        ({**good, "keys": {**good["keys"], "auth": "not base64!"}}, "keys.auth"),
        ({**good, "keys": {**good["keys"], "auth": b64url(b"short")}}, "keys.auth"),
    ]
    for body, name in cases:
        r = post(body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["error"]["field"] == name, r.text
    anonymous = httpx.post(node.url + "/v1/me/push-subscriptions", json=good, timeout=10)
    assert anonymous.status_code == 401
    assert post(good).status_code == 201
    delete = httpx.request(
        "DELETE",
        node.url + "/v1/me/push-subscriptions",
        json={"endpoint": good["endpoint"]},
        headers=node.me(user),
        timeout=10,
    )
    assert delete.status_code == 204
    assert not db(node, "SELECT 1 FROM push_subscriptions WHERE user_id = ?", user)


@pytest.mark.slow  # a whole-system run (several processes, or a kill): make test-slow
def test_push_survives_kill_9_before_the_push_service_answers(
    tmp_path: Path, service: PushService
) -> None:
    with node_database() as env:
        srv = Server(tmp_path, {**ENV, **env}).start()
        kill_before_answer(srv, service)


def kill_before_answer(srv: Server, service: PushService) -> None:
    try:
        key = vapid_key(srv)
        user, browser = subscribed(srv, service, "hold")
        nid = publish(srv, user)
        service.wait(browser)  # it reached the push service, which has not answered
        srv.kill(signal.SIGKILL)
        srv.start()
        assert vapid_key(srv) == key  # kept in the database
        pushes = service.wait(browser, 2, timeout=30)  # once the dead sender's lease ends
        assert ids(pushes) == [nid, nid]
        assert pushes[1].key == key
        outbox_empty(srv)
    finally:
        srv.kill()


def test_two_nodes_share_the_vapid_key_and_send_each_push_once(
    node: Server, service: PushService
) -> None:
    other = Server(node.workdir, {**ENV, "CLARION_DATABASE_URL": node.env["CLARION_DATABASE_URL"]})
    other.api_key = node.api_key
    try:
        other.start()
        assert vapid_key(other) == vapid_key(node)
        user, browser = subscribed(node, service)
        sent = [publish((node, other)[i % 2], user, title=f"n{i}") for i in range(20)]
        service.wait(browser, 20)
        outbox_empty(node)
        assert sorted(ids(service.to(browser))) == sorted(sent)  # each once, by either node
    finally:
        other.kill(signal.SIGTERM)


def test_loopback_endpoints_need_the_test_setting() -> None:
    from clarion.api.push import check_endpoint
    from clarion.domain import ClarionError

    check_endpoint("http://127.0.0.1:9/push/x", allow_http_loopback=True)
    check_endpoint("https://fcm.googleapis.com/fcm/send/abc", allow_http_loopback=False)
    for url in ("http://127.0.0.1:9/push/x", "https://127.0.0.1/x", "https://[::1]/x"):
        with pytest.raises(ClarionError) as err:
            check_endpoint(url, allow_http_loopback=False)
        assert (err.value.status, err.value.field) == (422, "endpoint")


def test_large_notifications_are_trimmed_to_fit_a_push() -> None:
    from clarion.events import notification_doc
    from clarion.push import MAX_PAYLOAD, payload

    doc = notification_doc(
        "01J", None, type="t", priority="high", title="é" * 300, body="ü" * 5000,
        url="https://app.example/" + "a" * 1000, icon="https://app.example/" + "i" * 2000,
    )  # fmt: skip
    out = orjson.loads(payload(doc))
    assert len(payload(doc)) <= MAX_PAYLOAD
    assert out["title"] == "é" * 300 and out["url"].startswith("https://")  # kept whole
    assert out["icon"] is None and out["body"] == "ü" * 200  # the body gave way first


def test_quiet_hours_end_in_the_users_zone() -> None:
    from clarion.domain import UserPreferences
    from clarion.preferences import quiet_until

    prefs = UserPreferences("Europe/Paris", "22:00", "07:00")
    late = datetime(2026, 3, 28, 22, 30, tzinfo=ZoneInfo("Europe/Paris"))  # DST starts at 2:00
    assert quiet_until(prefs, late) == datetime(2026, 3, 29, 7, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert quiet_until(prefs, late.replace(hour=12)) is None
    early = datetime(2026, 3, 29, 5, 0, tzinfo=ZoneInfo("Europe/Paris"))
    assert quiet_until(prefs, early) == early.replace(hour=7)


@pytest.mark.slow  # a node of its own
def test_a_push_claimed_before_a_recall_is_not_sent_after_it(tmp_path: Path) -> None:
    """One push in flight, to a slow push service, holds the only slot; the other push of the
    same batch, already claimed, waits for it. A recall in between: the waiting push is not
    sent, and the delivery log says `recalled` for it."""
    slow = PushService()
    env = {**ENV, "CLARION_PUSH_CONCURRENCY": "1", "CLARION_PUSH_TIMEOUT": "5"}
    with node_database() as db_env:
        srv = Server(tmp_path, {**env, **db_env}).start()
        try:
            (one, first), (two, second) = subscribed(srv, slow, "hold"), subscribed(srv, slow)
            r = srv.publish(users=[one, two], priority="high", title="sent by mistake")
            assert r.status_code == 201, r.text
            nid = r.json()["id"]
            eventually(lambda: slow.pushes, 15, "the first push to reach the push service")
            held = slow.pushes[0].browser
            waiting_user = two if held is first else one
            waiting = second if held is first else first
            claimed = "SELECT attempts FROM push_outbox WHERE notification_id = ?"
            assert [a for (a,) in db(srv, claimed, nid)] == [1, 1]  # both in the batch
            recall = httpx.delete(
                f"{srv.url}/v1/notifications/{nid}",
                headers={"Authorization": f"Bearer {srv.api_key}"},
                timeout=10,
            )
            assert recall.status_code == 200, recall.text
            slow.release.set()  # the held push is answered; its slot frees
            eventually(
                lambda: "recalled" in push_log(srv, nid, waiting_user),
                15,
                "the claimed push logged as recalled",
            )
            assert "pushed" not in push_log(srv, nid, waiting_user)
            assert slow.to(waiting) == [] and len(slow.to(held)) == 1
        finally:
            srv.kill()
            slow.close()
