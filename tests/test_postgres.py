"""The store on PostgreSQL, through real nodes and sockets: two nodes share one fresh database,
so concurrent writers really race (row locks, unique keys) instead of queueing in one process.

Needs PostgreSQL (`CLARION_TEST_POSTGRES`); skipped without it, failed without it in CI. The whole
suite can also run on PostgreSQL with `CLARION_TEST_DATABASE=postgres`.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from clarion.streams import encode_cursor
from harness.cluster import publish_until_killed
from harness.proxy import Proxy
from harness.server import Server
from harness.util import send, user_id


@pytest.fixture(scope="module")
def nodes(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two nodes on one PostgreSQL database (memory broker: only the store is shared)."""
    env = {"CLARION_DATABASE_URL": pg_url}
    a = Server(tmp_path_factory.mktemp("pg-a"), env).start()
    b = Server(tmp_path_factory.mktemp("pg-b"), {**env, "CLARION_JWT_SECRET": a.secret})
    b.secret, b.api_key = a.secret, a.api_key
    try:
        b.start()
        yield [a, b]
    finally:
        for node in (a, b):
            node.kill(signal.SIGTERM)


def _parallel(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls at once (released together), answers in call order."""
    gate = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        gate.wait()
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, calls))


def _inbox(server: Server, user: str, filter: str = "all") -> list[dict[str, Any]]:
    r = httpx.get(
        server.url + "/v1/me/notifications",
        params={"filter": filter, "limit": 100},
        headers=server.me(user),
    )
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _unread(server: Server, user: str) -> int:
    r = httpx.get(server.url + "/v1/me/unread-count", headers=server.me(user))
    assert r.status_code == 200, r.text
    count: int = r.json()["unread"]
    return count


def _change(server: Server, user: str, path: str) -> dict[str, Any]:
    r = httpx.post(server.url + "/v1/me/notifications/" + path, headers=server.me(user))
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_publish_and_inbox_states(nodes: list[Server]) -> None:
    a, b = nodes
    alice, bob = user_id(), user_id()
    assert _unread(a, alice) == 0 and _unread(b, bob) == 0  # broadcasts count from here on
    personal = [send(a, users=[alice, bob], title=f"p{i}") for i in range(3)]
    shared = send(b, all=True, title="everyone")
    assert [i["id"] for i in _inbox(b, alice)] == [shared, *personal[::-1]]
    assert _unread(a, alice) == 4

    assert _change(b, alice, f"{personal[0]}/read")["unread"] == 3
    assert _change(a, alice, f"{shared}/read")["unread"] == 2
    assert {i["id"] for i in _inbox(a, alice, "unread")} == set(personal[1:])
    read = {i["id"]: i["read_at"] for i in _inbox(a, alice)}
    assert read[personal[0]] and read[shared] and not read[personal[1]]
    assert _change(a, alice, f"{shared}/unread")["unread"] == 3

    assert _change(b, alice, "read-all") == {
        "id": None,
        "change": "read_all",
        "unread": 0,
        "unseen": 0,
    }
    assert _inbox(a, alice, "unread") == [] and len(_inbox(a, alice)) == 4
    later = send(a, users=[alice])
    assert _unread(b, alice) == 1, "read-all does not reach later notifications"
    assert _change(a, alice, "archive-all")["unread"] == 0
    assert _inbox(b, alice) == []
    assert [i["id"] for i in _inbox(b, alice, "archived")] == [later, shared, *personal[::-1]]
    assert _unread(a, bob) == 4 and len(_inbox(a, bob)) == 4, "bob's inbox is untouched"


def test_idempotency_replay_and_race(nodes: list[Server]) -> None:
    a, b = nodes
    u = user_id()
    first = a.publish(users=[u], idempotency_key=f"{u}-once")
    again = b.publish(users=[u], idempotency_key=f"{u}-once")
    assert (first.status_code, again.status_code) == (201, 200), again.text
    assert again.json()["duplicate"] is True
    assert (again.json()["id"], again.json()["recipients"]) == (first.json()["id"], 1)

    # The same key published on both nodes at the same moment: one 201, one duplicate.
    for i in range(10):
        key = f"{u}-race-{i}"
        answers = _parallel(
            [lambda n=n, k=key: n.publish(users=[u], idempotency_key=k, title=k) for n in nodes]
        )
        assert sorted(r.status_code for r in answers) == [200, 201], [r.text for r in answers]
        assert answers[0].json()["id"] == answers[1].json()["id"]
    titles = [i["title"] for i in _inbox(a, u)]
    assert sorted(titles) == sorted(["hello"] + [f"{u}-race-{i}" for i in range(10)])


def test_concurrent_publishers_get_gap_free_seqs(nodes: list[Server]) -> None:
    u, per_publisher = user_id(), 15

    def publisher(p: int) -> list[str]:
        node = nodes[p % 2]
        with httpx.Client(timeout=30) as client:
            return [
                client.post(
                    node.url + "/v1/notifications",
                    json={"users": [u], "title": f"{p}-{i}"},
                    headers={"Authorization": f"Bearer {node.api_key}"},
                ).json()["id"]
                for i in range(per_publisher)
            ]

    acked = [nid for ids in _parallel([lambda p=p: publisher(p) for p in range(8)]) for nid in ids]
    live = nodes[0].connect(u, encode_cursor({f"user:{u}": 0}))
    try:
        events = [e for e in live.drain(0.5) if e["type"] == "notification"]
    finally:
        live.close()
    assert [e["seq"] for e in events] == list(range(1, 8 * per_publisher + 1))
    assert sorted(e["notification"]["id"] for e in events) == sorted(acked)


def test_broadcast_reaches_everyone_live_and_in_the_inbox(nodes: list[Server]) -> None:
    a, b = nodes
    users = [user_id(), user_id()]
    lives = [a.connect(users[0]), b.connect(users[1])]
    try:
        for live in lives:
            live.until("unread")
        nid = send(a, all=True, title="maintenance tonight")
        event = lives[0].until("notification")
        assert event["stream"] == "all" and event["notification"]["id"] == nid
        for u, node in zip(users, nodes, strict=True):
            assert nid in [i["id"] for i in _inbox(node, u)]
            assert _unread(node, u) == 1
    finally:
        for live in lives:
            live.close()


def test_resume_with_a_cursor(nodes: list[Server]) -> None:
    a, b = nodes
    u = user_id()
    live = a.connect(u)
    live.until("unread")
    for i in range(3):
        send(a, users=[u], title=f"m{i}")
    assert [live.until("notification")["notification"]["title"] for _ in range(3)] == [
        "m0",
        "m1",
        "m2",
    ]
    cursor = live.cursor
    live.close()
    for i in range(3, 7):
        send(b, users=[u], title=f"m{i}")
    back = b.connect(u, cursor)  # resumes on the other node
    try:
        replay = [e for e in back.drain() if e["type"] == "notification"]
    finally:
        back.close()
    assert [e["notification"]["title"] for e in replay] == [f"m{i}" for i in range(3, 7)]
    assert [e["seq"] for e in replay] == [4, 5, 6, 7]


def test_tickets_are_single_use_across_nodes(nodes: list[Server]) -> None:
    a, b = nodes
    for _ in range(5):
        ticket = httpx.post(a.url + "/v1/tickets", headers=a.me("alice")).json()["ticket"]

        def use(node: Server, ticket: str = ticket) -> int:
            with httpx.stream(
                "GET", node.url + "/v1/sse", params={"ticket": ticket}, timeout=5
            ) as resp:
                return resp.status_code

        assert sorted(_parallel([lambda: use(a), lambda: use(b)])) == [200, 401]
    assert httpx.get(a.url + "/v1/sse", params={"ticket": "forged"}).status_code == 401


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
def test_kill_9_loses_no_acknowledged_notification(pg_url: str, tmp_path: Path) -> None:
    server = Server(tmp_path, {"CLARION_DATABASE_URL": pg_url}).start()
    try:
        users = [user_id() for _ in range(3)]
        acked = publish_until_killed(server, users)

        server.start()
        for u in users:
            want = {nid for who, nid in acked if who == u}
            live = server.connect(u, encode_cursor({f"user:{u}": 0}))
            try:
                events = [e for e in live.drain(0.5) if e["type"] == "notification"]
            finally:
                live.close()
            assert want <= {e["notification"]["id"] for e in events}, "lost acknowledged ones"
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    finally:
        server.kill(signal.SIGTERM)


def test_unreachable_postgres_answers_503_then_recovers(pg_url: str, tmp_path: Path) -> None:
    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    server = Server(tmp_path, {"CLARION_DATABASE_URL": via_proxy}).start()
    try:
        u = user_id()
        assert server.publish(users=[u]).status_code == 201
        proxy.cut()
        r = server.publish(users=[u])
        assert r.status_code == 503, r.text
        assert httpx.get(server.url + "/readyz").status_code == 503
        inbox = httpx.get(server.url + "/v1/me/notifications", headers=server.me(u))
        assert inbox.status_code == 503, inbox.text
        proxy.start()
        deadline = time.monotonic() + 10
        while (r := server.publish(users=[u])).status_code != 201:
            assert time.monotonic() < deadline, f"no recovery: {r.status_code} {r.text}"
            time.sleep(0.2)
        assert len(_inbox(server, u)) == 2
    finally:
        server.kill(signal.SIGTERM)
        proxy.cut()
