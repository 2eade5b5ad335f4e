"""Control across nodes (docs/control.md): a schedule released once when a node is killed at
the due moment, recall on two nodes' live tabs, presence summed over nodes. PostgreSQL and
Redis, real processes."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cluster import start_nodes, stop_nodes
from harness.server import Live, Server
from harness.services import REDIS_URL, require_service
from harness.util import eventually, send, user_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
ENV = {
    "CLARION_SCHEDULE_INTERVAL": "0.2",
    "CLARION_PRESENCE_INTERVAL": "0.3",
    "CLARION_PRESENCE_STALE": "3",
}


@pytest.fixture
def two(pg_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    require_service("Redis", REDIS_URL)
    broker = f"{REDIS_URL}?namespace=ctl{secrets.token_hex(4)}"
    env = {**ENV, "CLARION_DATABASE_URL": pg_url, "CLARION_BROKER_URL": broker}
    nodes = start_nodes(tmp_path, 2, env)
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def ids(live: Live, quiet: float = 0.5) -> list[str]:
    return [e["notification"]["id"] for e in live.drain(quiet) if e["type"] == "notification"]


def inbox(server: Server, user: str) -> list[str]:
    r = httpx.get(
        server.url + "/v1/me/notifications",
        params={"limit": 100},
        headers=server.me(user),
        timeout=10,
    )
    return [item["id"] for item in r.json()["items"]]


def test_a_schedule_is_released_once_with_a_node_killed_at_the_due_time(
    two: list[Server],
) -> None:
    a, b = two
    alice = user_id()
    live = b.connect(alice)
    due = time.time() + 6
    at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(due)) + f".{int(due % 1 * 1000):03d}Z"
    r = httpx.post(
        f"{a.url}/v1/notifications/batch",
        json={
            "notifications": [
                {"users": [alice], "title": f"s{i}", "send_at": at} for i in range(30)
            ]
        },
        headers={"Authorization": f"Bearer {a.api_key}"},
        timeout=30,
    )
    assert [item["status"] for item in r.json()["results"]] == [201] * 30, r.text
    sent = [item["result"]["id"] for item in r.json()["results"]]
    assert time.time() < due and inbox(b, alice) == []  # accepted, not visible before its time
    time.sleep(max(0.0, due - time.time()))
    a.kill(signal.SIGKILL)  # at the due moment: it may be releasing them right now
    got: list[str] = []
    eventually(lambda: (got.extend(ids(live, 0.3)), len(got) >= 30)[1], timeout=30, what="30")
    got += ids(live, 1.0)
    assert sorted(got) == sorted(sent) and len(got) == 30  # each once
    assert sorted(inbox(b, alice)) == sorted(sent)
    live.close()


def test_a_schedule_survives_its_only_node_killed_at_the_due_time(
    pg_url: str, tmp_path: Path
) -> None:
    srv = Server(tmp_path, {**ENV, "CLARION_DATABASE_URL": pg_url}).start()
    try:
        alice = user_id()
        cursor = srv.connect(alice).cursor
        sent = [send(srv, users=[alice], title=f"k{i}", delay=2) for i in range(10)]
        time.sleep(2)
        srv.kill(signal.SIGKILL)
        srv.start()
        live = srv.connect(alice, cursor=cursor)
        got: list[str] = []
        eventually(lambda: (got.extend(ids(live, 0.3)), len(got) >= 10)[1], timeout=30, what="10")
        got += ids(live, 1.0)
        assert sorted(got) == sorted(sent) and len(got) == 10
        live.close()
    finally:
        srv.kill()


def test_recall_reaches_tabs_on_two_nodes_and_resume_does_not_bring_it_back(
    two: list[Server],
) -> None:
    a, b = two
    alice = user_id()
    tabs = [a.connect(alice), b.connect(alice)]
    old = tabs[1].cursor
    nid = send(a, users=[alice], title="wrong")
    for tab in tabs:
        assert ids(tab) == [nid]
    r = httpx.delete(
        f"{a.url}/v1/notifications/{nid}",
        headers={"Authorization": f"Bearer {a.api_key}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    for tab in tabs:
        event = tab.until("state")
        assert event["change"] == "removed" and event["ids"] == [nid] and event["unread"] == 0
    assert inbox(a, alice) == [] and inbox(b, alice) == []
    resumed = b.connect(alice, cursor=old)
    assert ids(resumed) == []
    for tab in [*tabs, resumed]:
        tab.close()


def test_presence_is_summed_over_nodes_and_a_dead_node_stops_counting(
    two: list[Server],
) -> None:
    a, b = two
    alice = user_id()

    def presence(server: Server) -> dict[str, Any]:
        r = httpx.get(
            f"{server.url}/v1/users/{alice}/presence",
            headers={"Authorization": f"Bearer {server.api_key}"},
            timeout=10,
        )
        out: dict[str, Any] = r.json()
        return out

    on_a, on_b = a.connect(alice), b.connect(alice)
    eventually(lambda: presence(a)["connections"] == 2, what="two connections seen from a")
    assert presence(b)["transports"] == {"websocket": 2} and presence(b)["online"]
    b.kill(signal.SIGKILL)  # its rows stop counting once its heartbeat is stale
    eventually(lambda: presence(a)["connections"] == 1, timeout=20, what="b's connection gone")
    on_a.close()
    eventually(lambda: not presence(a)["online"], what="alice offline")
    assert presence(a)["last_seen"]
    on_b.close()


def test_a_broadcast_counts_each_user_once_over_tabs_and_nodes(two: list[Server]) -> None:
    """Alice with a tab on each node and Bob with one: `delivered` is 2 users, not 3 tabs."""
    a, b = two
    alice, bob = user_id(), user_id()
    tabs = [a.connect(alice), b.connect(alice), a.connect(bob)]
    nid = send(a, all=True, title="everyone")
    for tab in tabs:
        assert nid in ids(tab)

    def delivered() -> int:
        r = httpx.get(
            f"{b.url}/v1/notifications/{nid}/deliveries",
            headers={"Authorization": f"Bearer {b.api_key}"},
            timeout=10,
        )
        count: int = r.json()["counts"].get("delivered", 0)
        return count

    eventually(lambda: delivered() >= 2, what="the delivered count")
    time.sleep(5 * float(ENV["CLARION_PRESENCE_INTERVAL"]))  # every node's batch is in
    assert delivered() == 2
    for tab in tabs:
        tab.close()


def test_a_webhook_put_on_one_node_is_used_by_the_other_at_once(
    pg_url: str, tmp_path: Path
) -> None:
    """Node b has read the (empty) list of endpoints and would keep it 10 minutes: the PUT on
    node a tells it, through the broker, to read it again."""
    from harness.webhooks import Receiver
    from test_control import CONTROL_ENV, admin

    require_service("Redis", REDIS_URL)
    broker = f"{REDIS_URL}?namespace=ctl{secrets.token_hex(4)}"
    env = {
        **ENV,
        **CONTROL_ENV,
        "CLARION_WEBHOOK_CACHE_SECONDS": "600",
        "CLARION_DATABASE_URL": pg_url,
        "CLARION_BROKER_URL": broker,
    }
    a, b = start_nodes(tmp_path, 2, env)
    receiver = Receiver(fail_first=0)
    try:
        alice = user_id()

        def read(nid: str) -> None:
            r = httpx.post(f"{b.url}/v1/me/notifications/{nid}/read", headers=b.me(alice))
            assert r.status_code == 200, r.text

        read(send(a, users=[alice], title="before"))  # b has read the list: none
        r = httpx.put(
            f"{a.url}/v1/webhooks/reads",
            json={"url": receiver.url, "events": ["notification.read"]},
            headers={"Authorization": f"Bearer {admin(a)}"},
            timeout=10,
        )
        assert r.status_code == 200, r.text
        receiver.secret = r.json()["secret"]

        def attempt() -> list[str]:  # a new notification each time: a read is told once
            read(send(a, users=[alice], title="after"))
            return receiver.events(alice)

        eventually(attempt, timeout=20, interval=0.2, what="b to queue a read for a's endpoint")
        told = receiver.events(alice)
        assert set(told) == {"notification.read"} and receiver.bad_signatures == 0
    finally:
        receiver.close()
        stop_nodes([a, b])
