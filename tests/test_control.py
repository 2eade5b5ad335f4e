"""Control and visibility (docs/control.md) on real `clarion serve` processes: scheduled
publishes, cancel, recall, the delivery log, presence and signed outbound webhooks."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from harness.server import Live, Server
from harness.services import node_database
from harness.util import eventually, send, user_id
from harness.webhooks import Receiver

CONTROL_ENV = {
    "CLARION_WEBHOOK_ALLOW_LOOPBACK": "true",
    "CLARION_WEBHOOK_RETRY_SECONDS": "0.2",
    "CLARION_WEBHOOK_INTERVAL": "0.2",
    "CLARION_PRESENCE_INTERVAL": "0.3",
    "CLARION_SCHEDULE_INTERVAL": "0.2",
}
ADMIN: dict[int, str] = {}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with node_database() as env:
        srv = Server(tmp_path_factory.mktemp("control"), {**env, **CONTROL_ENV}).start()
        yield srv
        srv.kill(signal.SIGTERM)


def api(server: Server, method: str, path: str, key: str | None = None, **kw: Any) -> Any:
    return httpx.request(
        method,
        server.url + path,
        headers={"Authorization": f"Bearer {key or server.api_key}"},
        timeout=10,
        **kw,
    )


def admin(server: Server) -> str:
    if server.port not in ADMIN:
        ADMIN[server.port] = server.cli("keys", "create", "--scope", "admin", "--name", "admin")
    return ADMIN[server.port]


def me(server: Server, user: str, method: str, path: str, **kw: Any) -> Any:
    return api(server, method, path, server.token(user), **kw)


def inbox_ids(server: Server, user: str) -> list[str]:
    r = me(server, user, "GET", "/v1/me/notifications", params={"limit": 100})
    assert r.status_code == 200, r.text
    return [item["id"] for item in r.json()["items"]]


def unread(server: Server, user: str) -> int:
    count: int = me(server, user, "GET", "/v1/me/unread-count").json()["unread"]
    return count


def notes(live: Live, quiet: float = 0.4) -> list[dict[str, Any]]:
    return [e for e in live.drain(quiet) if e["type"] == "notification"]


def states(log: dict[str, Any], user: str, channel: str = "in_app") -> dict[str, Any]:
    for r in log["recipients"]:
        if r["user"] == user and r["channel"] == channel:
            return {s["state"]: s for s in r["states"]}
    return {}


# -- schedule -----------------------------------------------------------------------------------


def test_a_scheduled_notification_appears_at_its_time_once(node: Server) -> None:
    alice = user_id()
    live = node.connect(alice)
    r = node.publish(users=[alice], title="later", delay=2)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["scheduled_for"] and body["recipients"] == 1
    # Accepted, not visible: no inbox entry, no count, no seq taken yet.
    assert inbox_ids(node, alice) == [] and unread(node, alice) == 0
    log = api(node, "GET", f"/v1/notifications/{body['id']}/deliveries").json()
    assert log["status"] == "scheduled" and log["scheduled_for"]
    event = live.until("notification", timeout=20)
    assert event["notification"]["id"] == body["id"] and event["notification"]["title"] == "later"
    assert notes(live) == []  # once
    assert inbox_ids(node, alice) == [body["id"]] and unread(node, alice) == 1
    states_of = states(api(node, "GET", f"/v1/notifications/{body['id']}/deliveries").json(), alice)
    assert {"accepted", "delivered"} <= set(states_of)
    live.close()


def test_schedule_validation_names_the_field(node: Server) -> None:
    both = node.publish(users=["x"], delay=5, send_at="2099-01-01T00:00:00Z")
    assert both.status_code == 422
    far = node.publish(users=["x"], send_at="2099-01-01T00:00:00Z")
    assert far.status_code == 422
    negative = node.publish(users=["x"], delay=-1)
    assert negative.status_code == 422 and negative.json()["error"]["field"] == "delay"


# -- cancel -------------------------------------------------------------------------------------


def test_cancel_before_release_and_after(node: Server) -> None:
    alice, bob = user_id(), user_id()
    key = "order-" + user_id()
    live = node.connect(alice)
    r = node.publish(users=[alice, bob], title="reminder", delay=3, cancellation_key=key)
    sid = r.json()["id"]
    # Bob's copy only, then the rest: each answer counts what it cancelled.
    one = api(
        node, "POST", "/v1/notifications/cancel", json={"cancellation_key": key, "users": [bob]}
    )
    assert one.status_code == 200 and one.json() == {"cancelled": 1}
    rest = api(node, "POST", "/v1/notifications/cancel", json={"cancellation_key": key})
    assert rest.json() == {"cancelled": 1}
    again = api(node, "POST", "/v1/notifications/cancel", json={"cancellation_key": key})
    assert again.json() == {"cancelled": 0}
    log = api(node, "GET", f"/v1/notifications/{sid}/deliveries").json()
    assert log["status"] == "cancelled" and states(log, bob)["cancelled"]
    # A released one is not cancelled (recall takes it back instead).
    nid = send(node, users=[alice], title="now", cancellation_key=key)
    assert api(node, "POST", "/v1/notifications/cancel", json={"cancellation_key": key}).json() == {
        "cancelled": 0
    }
    seen = [e["notification"]["id"] for e in notes(live, quiet=4)]  # past the cancelled due time
    assert seen == [nid] and inbox_ids(node, alice) == [nid]
    bad = api(node, "POST", "/v1/notifications/cancel", json={"users": [alice]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "cancellation_key"
    live.close()


def test_cancel_takes_held_digest_items(node: Server) -> None:
    alice, like, key = user_id(), "like" + user_id()[2:], "post-" + user_id()
    r = api(node, "PUT", f"/v1/types/{like}", admin(node), json={"digest_seconds": 3600})
    assert r.status_code == 200, r.text
    held = [
        node.publish(users=[alice], type=like, priority="low", title=f"l{i}", cancellation_key=key)
        for i in range(2)
    ]
    assert [h.json()["held"] for h in held] == [1, 1]
    r = api(node, "POST", "/v1/notifications/cancel", json={"cancellation_key": key})
    assert r.json() == {"cancelled": 2}
    log = api(node, "GET", f"/v1/notifications/{held[0].json()['id']}/deliveries").json()
    assert {"held", "cancelled"} <= set(states(log, alice))


# -- recall -------------------------------------------------------------------------------------


def test_recall_leaves_inbox_count_and_live_tabs_and_is_never_replayed(node: Server) -> None:
    alice = user_id()
    tabs = [node.connect(alice), node.connect(alice)]
    old_cursor = tabs[0].cursor
    keep = send(node, users=[alice], title="keep")
    gone = send(node, users=[alice], title="oops")
    for tab in tabs:
        assert [e["notification"]["id"] for e in notes(tab)] == [keep, gone]
    assert unread(node, alice) == 2
    r = api(node, "DELETE", f"/v1/notifications/{gone}")
    assert r.status_code == 200 and r.json()["streams"] == 1, r.text
    for tab in tabs:
        event = tab.until("state")
        assert event["change"] == "removed" and event["ids"] == [gone] and event["unread"] == 1
    assert inbox_ids(node, alice) == [keep] and unread(node, alice) == 1
    # A tab resuming from before both never sees the recalled one again.
    resumed = node.connect(alice, cursor=old_cursor)
    assert [e["notification"]["id"] for e in notes(resumed)] == [keep]
    log = api(node, "GET", f"/v1/notifications/{gone}/deliveries").json()
    assert log["status"] == "recalled" and "recalled" in states(log, alice)
    assert api(node, "DELETE", "/v1/notifications/0000000000000000000000000Z").status_code == 404
    for tab in [*tabs, resumed]:
        tab.close()


def test_recall_of_a_broadcast_tells_the_stream(node: Server) -> None:
    alice = user_id()
    live = node.connect(alice)
    nid = send(node, all=True, title="to everyone")
    assert any(e["notification"]["id"] == nid for e in notes(live))
    before = unread(node, alice)
    assert api(node, "DELETE", f"/v1/notifications/{nid}").status_code == 200
    event = live.until("state")
    assert event["stream"] == "all" and event["change"] == "removed" and "unread" not in event
    assert nid not in inbox_ids(node, alice) and unread(node, alice) == before - 1


# -- delivery log -------------------------------------------------------------------------------


def test_the_delivery_log_matches_what_happened(node: Server) -> None:
    live_user, offline, muted = user_id(), user_id(), user_id()
    kind = "news" + user_id()[2:]
    r = me(node, muted, "PUT", "/v1/me/preferences", json={"types": {kind: {"in_app": False}}})
    assert r.status_code == 200, r.text
    live = node.connect(live_user)
    nid = send(node, users=[live_user, offline, muted], type=kind, title="log me")
    assert [e["notification"]["id"] for e in notes(live)] == [nid]
    assert me(node, live_user, "POST", f"/v1/me/notifications/{nid}/read").status_code == 200

    def log() -> dict[str, Any]:
        out: dict[str, Any] = api(node, "GET", f"/v1/notifications/{nid}/deliveries").json()
        return out

    eventually(lambda: "delivered" in states(log(), live_user), what="delivered to be logged")
    found = log()
    mine = states(found, live_user)
    assert list(mine) == ["accepted", "delivered", "read"]
    assert mine["delivered"]["detail"] == "websocket"
    assert list(states(found, offline)) == ["accepted"]
    assert list(states(found, muted)) == ["skipped"]
    assert "preference" in states(found, muted)["skipped"]["detail"]
    assert found["counts"]["accepted"] == 2 and found["counts"]["skipped"] == 1
    # Paged by user.
    first = api(node, "GET", f"/v1/notifications/{nid}/deliveries", params={"limit": 1}).json()
    assert len({r["user"] for r in first["recipients"]}) == 1 and first["next_cursor"]
    # The user's inbox as a backend sees it, with states.
    page = api(node, "GET", f"/v1/users/{live_user}/notifications").json()
    assert page["items"][0]["id"] == nid and page["items"][0]["read_at"]
    assert {d["state"] for d in page["items"][0]["deliveries"]} == {"delivered"}
    assert (
        api(node, "GET", f"/v1/notifications/{nid}/deliveries", node.token("x")).status_code == 401
    )
    live.close()


def test_a_broadcast_log_counts_instead_of_listing_followers(node: Server) -> None:
    readers = [user_id() for _ in range(2)]
    tabs = [node.connect(u) for u in readers]
    nid = send(node, all=True, title="everyone")
    for tab in tabs:
        assert any(e["notification"]["id"] == nid for e in notes(tab))
    me(node, readers[0], "POST", f"/v1/me/notifications/{nid}/read")

    def log() -> dict[str, Any]:
        out: dict[str, Any] = api(node, "GET", f"/v1/notifications/{nid}/deliveries").json()
        return out

    eventually(lambda: log()["counts"].get("delivered", 0) >= 2, what="the delivered count")
    found = log()
    assert found["streams"] == ["all"] and found["counts"]["read"] == 1
    assert [r["user"] for r in found["recipients"]] == [readers[0]]
    for tab in tabs:
        tab.close()


# -- presence -----------------------------------------------------------------------------------


def test_presence_on_one_node(node: Server) -> None:
    alice = user_id()
    off = api(node, "GET", f"/v1/users/{alice}/presence").json()
    assert off == {
        "user": alice,
        "online": False,
        "connections": 0,
        "transports": {},
        "last_seen": None,
    }
    live = node.connect(alice)

    def now() -> dict[str, Any]:
        out: dict[str, Any] = api(node, "GET", f"/v1/users/{alice}/presence").json()
        return out

    eventually(lambda: now()["online"], what="alice online")
    assert now()["transports"] == {"websocket": 1}
    live.close()
    eventually(lambda: not now()["online"], what="alice offline")
    assert now()["last_seen"]


# -- webhooks -----------------------------------------------------------------------------------


def test_signed_webhooks_in_order_through_a_failing_receiver(node: Server) -> None:
    receiver = Receiver(fail_first=3)
    name = "hook" + user_id()[2:]
    events = [
        "user.connected",
        "notification.delivered",
        "notification.read",
        "notification.recalled",
    ]
    try:
        r = api(
            node,
            "PUT",
            f"/v1/webhooks/{name}",
            admin(node),
            json={"url": receiver.url, "events": events},
        )
        assert r.status_code == 200, r.text
        secret = r.json()["secret"]
        assert secret.startswith("whsec_")
        receiver.secret = secret
        again = api(
            node,
            "PUT",
            f"/v1/webhooks/{name}",
            admin(node),
            json={"url": receiver.url, "events": events},
        )
        assert again.json()["secret"] is None  # answered once
        assert (
            api(
                node, "PUT", f"/v1/webhooks/{name}", json={"url": receiver.url, "events": events}
            ).status_code
            == 403
        )
        alice = user_id()
        live = node.connect(alice)
        eventually(
            lambda: receiver.events(alice) == ["user.connected"], timeout=20, what="connected"
        )
        nid = send(node, users=[alice], title="hooked")
        assert notes(live)
        eventually(lambda: len(receiver.events(alice)) >= 2, timeout=20, what="delivered")
        me(node, alice, "POST", f"/v1/me/notifications/{nid}/read")
        me(node, alice, "POST", f"/v1/me/notifications/{nid}/read")  # again: told once
        api(node, "DELETE", f"/v1/notifications/{nid}")
        want = [
            "user.connected",
            "notification.delivered",
            "notification.read",
            "notification.recalled",
        ]
        eventually(lambda: receiver.events(alice) == want, timeout=30, what="all four, in order")
        assert receiver.bad_signatures == 0
        attempts = api(node, "GET", f"/v1/webhooks/{name}/attempts", admin(node)).json()["attempts"]
        assert any(a["status"] == 503 for a in attempts) and any(
            a["status"] == 204 for a in attempts
        )
        failed_ids = {a["message_id"] for a in attempts if a["status"] == 503}
        ok_ids = {a["message_id"] for a in attempts if a["status"] == 204}
        assert failed_ids <= ok_ids  # the retries kept their webhook-id
        live.close()
    finally:
        api(node, "DELETE", f"/v1/webhooks/{name}", admin(node))
        receiver.close()


def test_webhook_urls_follow_the_ssrf_rules(node: Server) -> None:
    for url in ("http://example.com/x", "https://10.0.0.1/x", "https://localhost/x", "ftp://a.io"):
        r = api(
            node,
            "PUT",
            "/v1/webhooks/bad",
            admin(node),
            json={"url": url, "events": ["user.connected"]},
        )
        assert r.status_code == 422 and r.json()["error"]["field"] == "url", url
    r = api(
        node,
        "PUT",
        "/v1/webhooks/bad",
        admin(node),
        json={"url": "https://a.io", "events": ["nope"]},
    )
    assert r.status_code == 422 and r.json()["error"]["field"] == "events[0]"


def test_the_log_reads_a_notification_id_from_the_event_bytes() -> None:
    from clarion.events import notification_doc, notification_event, notification_id_of

    doc = notification_doc(
        "01ABC",
        None,
        type="t",
        priority="normal",
        title='"notification":{"id":"X"}',
        data={"notification": {"id": "FAKE"}},
    )
    assert notification_id_of(notification_event("user:a", 3, doc, also={"all": 2})) == "01ABC"
    assert notification_id_of(b'{"type":"notification","notification": {"id": "01Z"}}') == "01Z"
