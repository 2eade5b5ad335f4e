"""Topics, roles and mixed audiences through a real node: who receives what, live and in the
inbox, exactly once; follows authorized by token claims or publisher grants."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.server import Live, Server
from harness.services import TEST_DATABASE
from harness.util import send, user_id


class User:
    """One user's HTTP side, with the claims its tokens carry."""

    def __init__(self, server: Server, name: str | None = None, **claims: Any) -> None:
        self.server = server
        self.name = name or user_id()
        self.claims = claims

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.server.token(self.name, **self.claims)}"}

    def call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(
            method, self.server.url + path, headers=self.headers(), timeout=10, **kw
        )

    def follow(self, topic: str) -> httpx.Response:
        return self.call("PUT", f"/v1/me/topics/{topic}")

    def unfollow(self, topic: str) -> httpx.Response:
        return self.call("DELETE", f"/v1/me/topics/{topic}")

    def inbox(self) -> dict[str, Any]:
        r = self.call("GET", "/v1/me/notifications", params={"limit": 100})
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def ids(self) -> list[str]:
        return [item["id"] for item in self.inbox()["items"]]

    def connect(self, cursor: str | None = None) -> Live:
        return self.server.connect(self.name, cursor, **self.claims)


def publisher(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {server.api_key}"}
    return httpx.request(method, server.url + path, headers=headers, timeout=10, **kw)


def notifications(live: Live, quiet: float = 0.4) -> list[dict[str, Any]]:
    return [e for e in live.drain(quiet) if e["type"] == "notification"]


def wait_for(live: Live, nid: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        event = live.recv(max(0.05, deadline - time.monotonic()))
        if event["type"] == "notification" and event["notification"]["id"] == nid:
            return event


def topic_name() -> str:
    return f"project:{user_id()}"


def test_a_follower_receives_a_topic_live_and_in_its_inbox(server: Server) -> None:
    topic = topic_name()
    alice, bob = User(server, topics=["project:*"]), User(server, topics=["project:*"])
    a, b = alice.connect(), bob.connect()
    r = alice.follow(topic)
    assert r.status_code == 200, r.text
    assert a.until("follow")["topic"] == f"topic:{topic}"
    r = server.publish(topics=[topic], title="deploy finished")
    assert r.status_code == 201, r.text
    assert r.json()["streams"] == [f"topic:{topic}"]
    nid = r.json()["id"]
    event = wait_for(a, nid)
    assert event["stream"] == f"topic:{topic}"
    assert notifications(b) == []
    assert alice.ids() == [nid] and alice.inbox()["unread"] == 1
    assert bob.ids() == []
    topics = alice.call("GET", "/v1/me/topics").json()["topics"]
    assert topics == [{"topic": topic, "granted": False}]
    # A new connection follows the topic from the start.
    a.close()
    a2 = alice.connect()
    assert f"topic:{topic}" in a2.welcome["streams"]
    wait_for(a2, send(server, topics=[topic]))
    a2.close()
    b.close()


def test_following_needs_the_token_claim_or_a_grant(server: Server) -> None:
    topic = topic_name()
    carol = User(server, topics=["team:*"])
    r = carol.follow(topic)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "forbidden"
    live = carol.connect()
    r = publisher(server, "PUT", f"/v1/topics/{topic}/subscribers", json={"users": [carol.name]})
    assert r.status_code == 200, r.text
    live.until("follow")
    wait_for(live, send(server, topics=[topic]))
    subs = publisher(server, "GET", f"/v1/topics/{topic}/subscribers").json()
    assert subs["users"] == [carol.name]
    # Granted: the user may unfollow and follow again.
    assert carol.unfollow(topic).status_code == 200
    live.until("unfollow")
    quiet = send(server, topics=[topic])
    assert carol.follow(topic).status_code == 200
    live.until("follow")
    loud = send(server, topics=[topic])
    seen = [e["notification"]["id"] for e in notifications(live)]
    assert seen == [loud] and quiet not in carol.ids()
    # The publisher withdraws: the follow ends and the user may not come back.
    r = publisher(
        server, "POST", f"/v1/topics/{topic}/subscribers/remove", json={"users": [carol.name]}
    )
    assert r.status_code == 200, r.text
    live.until("unfollow")
    assert carol.follow(topic).status_code == 403
    after = send(server, topics=[topic])
    assert notifications(live) == [] and after not in carol.ids()
    live.close()


def test_unfollow_stops_delivery_and_keeps_the_past(server: Server) -> None:
    topic = topic_name()
    dave = User(server, topics=[topic])
    live = dave.connect()
    assert dave.follow(topic).status_code == 200
    live.until("follow")
    before = send(server, topics=[topic])
    wait_for(live, before)
    assert dave.unfollow(topic).status_code == 200
    live.until("unfollow")
    after = send(server, topics=[topic])
    assert notifications(live) == []
    assert dave.ids() == [before] and after not in dave.ids()
    live.close()


def test_a_claim_taken_away_ends_the_follow(server: Server) -> None:
    topic = topic_name()
    erin = User(server, topics=["project:*"])
    assert erin.follow(topic).status_code == 200
    first = send(server, topics=[topic])
    erin.claims = {"topics": ["other:*"]}  # the app mints narrower tokens from now on
    live = erin.connect()
    assert f"topic:{topic}" not in live.welcome["streams"]
    later = send(server, topics=[topic])
    assert notifications(live) == []
    ids = erin.ids()
    assert first in ids and later not in ids
    live.close()


def test_roles_come_from_the_token(server: Server) -> None:
    role = f"admin-{user_id()}"
    admin, plain = User(server, roles=[role]), User(server)
    a, p = admin.connect(), plain.connect()
    assert f"role:{role}" in a.welcome["streams"]
    nid = send(server, roles=[role], title="disk almost full")
    assert wait_for(a, nid)["stream"] == f"role:{role}"
    assert notifications(p) == []
    assert admin.ids() == [nid] and plain.ids() == []
    # The role is taken away: what came while it held stays, what comes after does not.
    admin.claims = {}
    assert admin.ids() == [nid]
    later = send(server, roles=[role])
    assert later not in admin.ids()
    a.close()
    p.close()


def test_mixed_audiences_give_each_recipient_one_copy(server: Server) -> None:
    topic, role = topic_name(), f"ops-{user_id()}"
    alice = User(server, roles=[role], topics=[topic])
    bob = User(server, topics=[topic])
    assert alice.follow(topic).status_code == 200
    assert bob.follow(topic).status_code == 200
    live = alice.connect()
    start = live.cursor
    a = send(server, users=[alice.name, bob.name], topics=[topic], roles=[role])
    b = send(server, users=[alice.name], all=True)
    c = send(server, topics=[topic, f"{topic}-other"], roles=[role])
    got = [e["notification"]["id"] for e in notifications(live, 0.6)]
    assert sorted(got) == sorted([a, b, c]), got
    inbox = alice.inbox()
    assert sorted(i["id"] for i in inbox["items"]) == sorted([a, b, c])
    assert inbox["unread"] == 3
    assert sorted(bob.ids()) == sorted([a, b, c])
    # Reconnect with the cursor: nothing again. From before them: each exactly once again.
    cursor = live.cursor
    live.close()
    again = alice.connect(cursor)
    assert notifications(again) == []
    again.close()
    replay = alice.connect(start)
    got = [e["notification"]["id"] for e in notifications(replay, 0.6)]
    assert sorted(got) == sorted([a, b, c]), got
    replay.close()
    # Long-polling from the same start: once each too.
    r = alice.call("GET", "/v1/poll", params={"since": start, "timeout": 0})
    polled = [e["notification"]["id"] for e in r.json()["events"] if e["type"] == "notification"]
    assert sorted(polled) == sorted([a, b, c]), polled
    # Reading it once reads it everywhere.
    assert alice.call("POST", f"/v1/me/notifications/{a}/read").json()["unread"] == 2


@pytest.mark.skipif(TEST_DATABASE != "sqlite", reason="counts rows in the SQLite file")
def test_a_topic_notification_is_stored_once(server: Server) -> None:
    topic = topic_name()
    users = [User(server, topics=[topic]) for _ in range(5)]
    for u in users:
        assert u.follow(topic).status_code == 200
    nid = send(server, topics=[topic])
    assert all(u.ids() == [nid] for u in users)
    db = sqlite3.connect(server.workdir / "clarion.db")
    try:
        for table in (
            "notifications WHERE id",
            "events WHERE notification_id",
            "routes WHERE notification_id",
        ):
            (count,) = db.execute(f"SELECT count(*) FROM {table} = ?", (nid,)).fetchone()
            assert count == 1, table
        (count,) = db.execute(
            "SELECT count(*) FROM marks WHERE notification_id = ?", (nid,)
        ).fetchone()
        assert count == 0
    finally:
        db.close()


def test_audience_errors_name_the_field(server: Server) -> None:
    r = server.publish(topics=["bad topic"])
    assert r.status_code == 422 and r.json()["error"]["field"] == "topics[0]"
    r = server.publish()
    assert r.status_code == 422
    assert "audience" in r.json()["error"]["message"]
    bad = User(server, topics=["x"])
    assert bad.follow("bad%20topic").status_code == 422


# -- entitlement, as a property --------------------------------------------------------------

TOPICS = ("a", "b")
ops = st.lists(
    st.tuples(
        st.sampled_from(["follow", "unfollow", "grant", "revoke", "claims", "publish"]),
        st.integers(0, 2),
        st.sampled_from(TOPICS),
        st.booleans(),
    ),
    min_size=3,
    max_size=9,
)


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_nobody_receives_a_topic_it_is_not_entitled_to(server: Server, steps: Any) -> None:
    """Follows, unfollows, grants, revocations and token-claim changes in any order: after
    each publish exactly the entitled users receive it (live and in their inboxes)."""
    run = user_id()
    topics = {t: f"h-{run}-{t}" for t in TOPICS}
    users = [User(server, topics=[]) for _ in range(3)]
    following = [set[str]() for _ in users]
    granted = [set[str]() for _ in users]
    lives = [u.connect() for u in users]
    expected: list[set[str]] = [set() for _ in users]
    try:
        for op, i, t, flag in steps:
            user, name = users[i], topics[t]
            if op == "follow":
                r = user.follow(name)
                allowed = name in user.claims["topics"] or t in granted[i]
                assert r.status_code == (200 if allowed else 403), r.text
                if allowed and t not in following[i]:
                    following[i].add(t)
                    lives[i].until("follow")
            elif op == "unfollow":
                assert user.unfollow(name).status_code == 200
                if t in following[i]:
                    following[i].discard(t)
                    lives[i].until("unfollow")
            elif op in ("grant", "revoke"):
                path = f"/v1/topics/{name}/subscribers" + ("" if op == "grant" else "/remove")
                r = publisher(
                    server, "PUT" if op == "grant" else "POST", path, json={"users": [user.name]}
                )
                assert r.status_code == 200, r.text
                if op == "grant":
                    granted[i].add(t)
                    if t not in following[i]:
                        following[i].add(t)
                        lives[i].until("follow")
                else:
                    granted[i].discard(t)
                    if t in following[i]:
                        following[i].discard(t)
                        lives[i].until("unfollow")
            elif op == "claims":
                # The app now mints tokens with (flag) or without the claim for topic t.
                user.claims = {"topics": [name] if flag else []}
                lives[i].close()
                lives[i] = user.connect()
                lost = {
                    x
                    for x in following[i]
                    if x not in granted[i] and topics[x] not in user.claims["topics"]
                }
                following[i] -= lost
            else:
                nid = send(server, topics=[name])
                for j, live in enumerate(lives):
                    if t in following[j]:
                        expected[j].add(nid)
                        wait_for(live, nid)
                for j, live in enumerate(lives):
                    assert notifications(live, 0.15) == [], f"user {j} got a notification"
        for j, user in enumerate(users):
            assert set(user.ids()) == expected[j]
    finally:
        for live in lives:
            live.close()
