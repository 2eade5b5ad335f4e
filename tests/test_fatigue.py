"""Preferences, quiet hours, collapse, throttles, digests, expiry, retention and batch publish,
through real nodes (one killed and restarted for the digest) and the real store. The decisions
themselves, window by window, are tested with a fixed clock in test_planner.py."""

from __future__ import annotations

import signal
import sqlite3
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest

from clarion.domain import Draft, TypeSettings, iso, utcnow
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore
from harness.server import Live, Server
from harness.services import TEST_DATABASE
from harness.util import user_id


def call(server: Server, method: str, path: str, user: str | None = None, **kw: Any) -> Any:
    auth = server.token(user) if user else server.api_key
    return httpx.request(
        method, server.url + path, headers={"Authorization": f"Bearer {auth}"}, timeout=10, **kw
    )


ADMIN_KEYS: dict[int, str] = {}


def admin_key(server: Server) -> str:
    if server.port not in ADMIN_KEYS:
        key = server.cli("keys", "create", "--scope", "admin", "--name", "admin")
        ADMIN_KEYS[server.port] = key
    return ADMIN_KEYS[server.port]


def set_type(server: Server, type: str, **body: Any) -> None:
    r = httpx.put(
        f"{server.url}/v1/types/{type}",
        json=body,
        headers={"Authorization": f"Bearer {admin_key(server)}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def inbox(server: Server, user: str) -> dict[str, Any]:
    r = call(server, "GET", "/v1/me/notifications", user, params={"limit": 100})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def notes(live: Live, quiet: float = 0.4) -> list[dict[str, Any]]:
    return [e for e in live.drain(quiet) if e["type"] == "notification"]


def kind() -> str:
    return "t" + user_id().replace("-", "")[:20]


# -- preferences ------------------------------------------------------------------------------


def test_an_opted_out_type_is_neither_delivered_nor_listed(server: Server) -> None:
    alice, bob, topic = user_id(), user_id(), f"news-{user_id()}"
    promo = kind()
    for u in (alice, bob):
        r = call(server, "PUT", f"/v1/topics/{topic}/subscribers", json={"users": [u]})
        assert r.status_code == 200
    r = call(server, "PUT", "/v1/me/preferences", alice, json={"types": {promo: {"in_app": False}}})
    assert r.status_code == 200, r.text
    assert r.json()["types"][promo] == {
        "in_app": False,
        "push": True,
        "email": True,
        "mandatory": False,
        "custom": True,
    }
    a, b = server.connect(alice), server.connect(bob)
    r = server.publish(users=[alice, bob], type=promo)
    assert r.status_code == 201 and r.json()["skipped"] == 1 and r.json()["recipients"] == 1
    shared = server.publish(topics=[topic], type=promo).json()["id"]
    other = server.publish(users=[alice], type="message").json()["id"]
    got_a = [e["notification"]["id"] for e in notes(a)]
    got_b = [e["notification"]["type"] for e in notes(b)]
    assert got_a == [other]
    assert got_b == [promo, promo]
    assert [i["id"] for i in inbox(server, alice)["items"]] == [other]
    assert inbox(server, alice)["unread"] == 1
    # Back to the default: the shared one shows again (it was stored once for everyone).
    r = call(server, "PUT", "/v1/me/preferences", alice, json={"types": {promo: {"in_app": None}}})
    assert r.status_code == 200
    assert shared in [i["id"] for i in inbox(server, alice)["items"]]
    a.close()
    b.close()


def test_app_defaults_and_mandatory_types(server: Server) -> None:
    alice = user_id()
    quiet_type, must = kind(), kind()
    set_type(server, quiet_type, in_app=False)
    set_type(server, must, mandatory=True)
    r = server.publish(users=[alice], type=quiet_type)
    assert r.json()["skipped"] == 1
    r = call(server, "PUT", "/v1/me/preferences", alice, json={"types": {must: {"in_app": False}}})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == f"types.{must}.in_app"
    # The user opts in to the type the app has off by default.
    r = call(
        server, "PUT", "/v1/me/preferences", alice, json={"types": {quiet_type: {"in_app": True}}}
    )
    assert r.status_code == 200
    assert server.publish(users=[alice], type=quiet_type).json()["recipients"] == 1
    prefs = call(server, "GET", "/v1/me/preferences", alice).json()
    assert prefs["types"][must]["mandatory"] is True
    types = call(server, "GET", "/v1/types").json()
    assert {"type": must, "mandatory": True} in [
        {"type": t["type"], "mandatory": t["mandatory"]} for t in types
    ]


def test_quiet_hours_in_the_users_time_zone_hold_push_not_in_app(server: Server) -> None:
    alice = user_id()
    r = call(
        server,
        "PUT",
        "/v1/me/preferences",
        alice,
        json={"timezone": "Pacific/Kiritimati", "quiet_hours": {"start": "00:00", "end": "23:59"}},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["timezone"] == "Pacific/Kiritimati"
    local = datetime.now(ZoneInfo("Pacific/Kiritimati"))
    assert body["quiet_now"] == ((local.hour, local.minute) != (23, 59))
    live = server.connect(alice)
    nid = server.publish(users=[alice]).json()["id"]
    assert [e["notification"]["id"] for e in notes(live)] == [nid]
    live.close()
    r = call(server, "PUT", "/v1/me/preferences", alice, json={"timezone": "Mars/Olympus"})
    assert r.status_code == 422 and r.json()["error"]["field"] == "timezone"
    r = call(
        server,
        "PUT",
        "/v1/me/preferences",
        alice,
        json={"quiet_hours": {"start": "25:00", "end": "07:00"}},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "quiet_hours.start"


# -- collapse ---------------------------------------------------------------------------------


def test_collapse_key_replaces_the_unread_one(server: Server) -> None:
    alice = user_id()
    live = server.connect(alice)
    key = f"chat-{user_id()}"
    ids = []
    for name in ("Bob", "Carol", "Dan"):
        r = server.publish(users=[alice], collapse_key=key, actor=name, title=f"{name} wrote")
        ids.append(r.json()["id"])
    events = notes(live)
    assert [e["notification"]["id"] for e in events] == ids
    assert events[2]["replaces"] == [ids[1]] and events[2]["collapsed"] == 2
    box = inbox(server, alice)
    assert [i["id"] for i in box["items"]] == [ids[2]]
    assert box["items"][0]["collapsed"] == 2 and box["unread"] == 1
    # A read one is not replaced.
    assert call(server, "POST", f"/v1/me/notifications/{ids[2]}/read", alice).status_code == 200
    newest = server.publish(users=[alice], collapse_key=key).json()["id"]
    assert [i["id"] for i in inbox(server, alice)["items"]] == [newest, ids[2]]
    live.close()


# -- throttle and digest ----------------------------------------------------------------------


async def test_a_throttle_holds_the_excess_for_a_summary_and_critical_passes(
    tmp_path: Path,
) -> None:
    """The real store, its clock stepped instead of waited out: the decisions themselves are
    tested in test_planner.py; the crash test below is the wall-clock one."""
    store = SQLStore(f"sqlite:///{tmp_path / 'clarion.db'}")
    await store.connect()
    try:
        comment = kind()
        await store.put_type_settings(TypeSettings(comment, throttle_count=2, throttle_seconds=6))
        start = utcnow()
        results = [(await store.publish([draft("alice", comment, f"c{i}")]))[0] for i in range(5)]
        assert [r.recipients for r in results] == [1, 1, 0, 0, 0]
        assert [r.held for r in results] == [0, 0, 1, 1, 1]
        [urgent] = await store.publish([draft("alice", comment, "now", "critical")])
        assert urgent.recipients == 1
        assert await store.flush_digests(utcnow()) == []  # the window is still open
        # When the window ends, the held three go out once, as one summary.
        [summary] = await store.flush_digests(start + timedelta(seconds=7))
        [event] = summary.events
        doc = orjson.loads(event.payload)["notification"]
        assert event.stream == "user:alice" and event.meta.type == comment
        assert doc["data"]["digest"]["count"] == 3 and doc["title"] == "c2 and 2 more"
        assert await store.flush_digests(start + timedelta(seconds=8)) == []
    finally:
        await store.close()


def draft(user: str, type: str, title: str, priority: str = "normal") -> Draft:
    id, now = new_id(), utcnow()
    doc = notification_doc(id, iso(now), type=type, priority=priority, title=title)
    return Draft(id=id, type=type, priority=priority, doc=doc, created_at=now, users=[user])


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
@pytest.mark.timeout(120)
def test_a_digest_is_sent_once_across_a_crash(fresh_server: Server) -> None:
    server = fresh_server.start()
    alice, like = user_id(), kind()
    set_type(server, like, digest_seconds=8)  # the crash must come before the window ends
    live = server.connect(alice)
    for i in range(4):
        r = server.publish(users=[alice], type=like, priority="low", title=f"like {i}")
        assert r.json()["held"] == 1
    server.publish(users=[alice], type=like, priority="normal", title="not held")
    assert [e["notification"]["title"] for e in notes(live)] == ["not held"]
    cursor = live.cursor
    live.close()
    server.kill()  # SIGKILL before the window ends: the held items are on disk
    server.start()
    live = server.connect(alice, cursor)  # the summary arrives live or in the replay
    summary = live.until("notification", timeout=20)["notification"]
    assert summary["data"]["digest"]["count"] == 4
    assert [i["title"] for i in summary["data"]["digest"]["items"]] == [
        f"like {i}" for i in range(4)
    ]
    assert notes(live, 2.0) == []
    titles = [i["title"] for i in inbox(server, alice)["items"]]
    assert titles == ["like 0 and 3 more", "not held"]
    live.close()


# -- expiry and retention ---------------------------------------------------------------------


def test_an_expired_notification_is_hidden_and_not_replayed(server: Server) -> None:
    alice = user_id()
    live = server.connect(alice)
    start = live.cursor
    short = server.publish(users=[alice], ttl=1, title="short").json()["id"]
    keep = server.publish(users=[alice], title="keep").json()["id"]
    assert len(notes(live)) == 2
    live.close()
    time.sleep(1.3)
    assert [i["id"] for i in inbox(server, alice)["items"]] == [keep]
    assert inbox(server, alice)["unread"] == 1
    again = server.connect(alice, start)
    assert [e["notification"]["id"] for e in notes(again)] == [keep]
    again.close()
    assert short != keep


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="counts rows in the SQLite file")
def test_retention_removes_old_notifications_and_their_state(tmp_path: Any) -> None:
    env = {"CLARION_RETENTION_DAYS": str(4 / 86400), "CLARION_RETENTION_INTERVAL": "0.5"}
    server = Server(tmp_path, env).start()
    try:
        alice = user_id()
        old = [server.publish(users=[alice], title=f"old {i}").json()["id"] for i in range(30)]
        call(server, "POST", f"/v1/me/notifications/{old[0]}/read", alice)
        deadline = time.monotonic() + 30
        while inbox(server, alice)["items"] and time.monotonic() < deadline:
            time.sleep(0.2)  # retention runs every 0.5 s on notifications older than 4 s
        live = server.connect(alice)
        fresh = server.publish(users=[alice], title="fresh").json()["id"]
        assert [e["notification"]["id"] for e in notes(live)] == [fresh]
        assert [i["id"] for i in inbox(server, alice)["items"]] == [fresh]
        db = sqlite3.connect(tmp_path / "clarion.db")
        try:
            marks = ",".join("?" * len(old))
            for table, col in (
                ("notifications", "id"),
                ("marks", "notification_id"),
                ("routes", "notification_id"),
                ("events", "notification_id"),
            ):
                (n,) = db.execute(
                    f"SELECT count(*) FROM {table} WHERE {col} IN ({marks})", old
                ).fetchone()
                assert n == 0, table
        finally:
            db.close()
        live.close()
    finally:
        server.kill()


# -- batch publish ----------------------------------------------------------------------------


def test_batch_publish_answers_item_by_item(server: Server) -> None:
    alice, bob = user_id(), user_id()
    live = server.connect(alice)
    items = [
        {"users": [alice], "title": "one"},
        {"users": [bob], "title": "two", "idempotency_key": f"k-{alice}"},
        {"users": [alice], "title": ""},
        {"users": [alice], "title": "four"},
        {"users": [bob], "title": "two", "idempotency_key": f"k-{alice}"},
        {"users": [bob], "title": "two again", "idempotency_key": f"k-{alice}"},
    ]
    r = call(server, "POST", "/v1/notifications/batch", json={"notifications": items})
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["status"] for x in results] == [201, 201, 422, 201, 200, 409]
    assert results[2]["error"]["field"] == "notifications[2].title"
    assert results[4]["result"]["id"] == results[1]["result"]["id"]
    titles = [e["notification"]["title"] for e in notes(live)]
    assert sorted(titles) == ["four", "one"]
    r = call(server, "POST", "/v1/notifications/batch", json={"notifications": []})
    assert r.status_code == 422 and r.json()["error"]["field"] == "notifications"
    live.close()


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
@pytest.mark.timeout(120)
def test_collapse_and_throttle_state_survive_a_restart(fresh_server: Server) -> None:
    server = fresh_server.start()
    alice, chat = user_id(), kind()
    set_type(server, chat, throttle={"count": 2, "seconds": 300})
    first = server.publish(users=[alice], type=chat, collapse_key="room-1", actor="Bob").json()
    assert first["recipients"] == 1
    server.kill(signal.SIGTERM)
    ADMIN_KEYS.pop(server.port, None)
    server.start()
    second = server.publish(users=[alice], type=chat, collapse_key="room-1", actor="Cy").json()
    third = server.publish(users=[alice], type=chat, collapse_key="room-1", actor="Di").json()
    assert (second["recipients"], third["recipients"], third["held"]) == (1, 0, 1)
    box = inbox(server, alice)
    assert [i["id"] for i in box["items"]] == [second["id"]]
    assert box["items"][0]["collapsed"] == 1 and box["unread"] == 1
