"""Whole clusters: three `clarion serve` nodes on one PostgreSQL database and one broker (Redis or
NATS), real sockets and real signals. A tab follows its user across nodes as clarion.js does, and
every notification acknowledged with 201 must reach it exactly once, in order, whatever happens
to the node it is on: another node's publish, a read elsewhere, `kill -9`, a rolling restart,
PostgreSQL cut off. `clarion serve --workers N` is the same cluster on one port.

Needs PostgreSQL and Redis / NATS (`CLARION_TEST_POSTGRES`, `_REDIS`, `_NATS`): skipped without
them, failed without them in CI. Each run uses its own database and broker namespace.
"""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from harness.cluster import Tab, Traffic, assert_exactly_once_in_order, start_nodes, stop_nodes
from harness.server import Server
from harness.services import NATS_URL, REDIS_URL, require_service
from harness.util import eventually, user_id

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`

SERVICES = {"redis": ("Redis", REDIS_URL), "nats": ("NATS", NATS_URL)}
RUN = "c" + secrets.token_hex(4)


def broker(name: str) -> str:
    label, url = SERVICES[name]
    require_service(label, url)
    return f"{url}?namespace={RUN}"


def cluster(pg_url: str, broker_url: str, workdir: Path, count: int = 3) -> list[Server]:
    return start_nodes(
        workdir, count, {"CLARION_DATABASE_URL": pg_url, "CLARION_BROKER_URL": broker_url}
    )


@pytest.fixture(scope="module", params=["redis", "nats"])
def three(
    request: pytest.FixtureRequest, pg_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[Server]]:
    nodes = cluster(pg_url, broker(request.param), tmp_path_factory.mktemp(request.param))
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def test_three_nodes_publish_read_and_resume_anywhere(three: list[Server]) -> None:
    n1, n2, n3 = three
    u = user_id()
    tab = n1.connect(u)
    try:
        tab.until("unread")
        ids = []
        for i in range(3):
            r = n3.publish(users=[u], title=f"from node 3: {i}")
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
            # The nodes' own check of the store runs every 5 s: this came through the broker.
            event = tab.until("notification", timeout=2)
            assert (event["notification"]["id"], event["seq"]) == (ids[-1], i + 1)

        read = httpx.post(f"{n2.url}/v1/me/notifications/{ids[0]}/read", headers=n2.me(u))
        assert read.status_code == 200, read.text
        state = tab.until("state", timeout=2)
        assert (state["change"], state["ids"], state["unread"], state["seq"]) == (
            "read",
            [ids[0]],
            2,
            4,
        )
        cursor = tab.cursor
    finally:
        tab.close()

    # Offline, more happens on every node; resuming on any node brings exactly what was missed.
    missed = [n.publish(users=[u], title=f"missed on {n.port}").json()["id"] for n in three]
    for node in three:
        back = node.connect(u, cursor)
        try:
            replay = [e for e in back.drain() if e.get("stream") == f"user:{u}"]
        finally:
            back.close()
        assert [e["notification"]["id"] for e in replay] == missed
        assert [e["seq"] for e in replay] == [5, 6, 7]

    # A broadcast published on node 2 reaches tabs on every node, once.
    tabs = [node.connect(user_id()) for node in three]
    try:
        for t in tabs:
            t.until("unread")
        nid = n2.publish(all=True, title="everyone").json()["id"]
        for t in tabs:
            event = t.until("notification", timeout=2)
            assert (event["stream"], event["notification"]["id"]) == ("all", nid)
            assert [e for e in t.drain(0.3) if e["type"] == "notification"] == []
    finally:
        for t in tabs:
            t.close()


def _open(tabs: list[Tab]) -> None:
    for tab in tabs:
        tab.start()
    eventually(lambda: all(t.connections for t in tabs), 20, "the tabs to connect", interval=0.05)


def test_kill_9_of_a_node_under_traffic(pg_url: str, tmp_path: Path) -> None:
    nodes = cluster(pg_url, broker("redis"), tmp_path)
    users = [user_id() for _ in range(6)]
    tabs = [Tab(nodes, u, first=i % 3) for i, u in enumerate(users)]
    try:
        _open(tabs)
        with Traffic(nodes, users) as traffic:
            traffic.wait_for(60)
            nodes[1].kill(signal.SIGKILL)
            traffic.wait_for(90)
        moved = [t for t in tabs if t.first == 1]
        assert all(t.connections >= 2 for t in moved), "tabs of the killed node did not move"
        assert all(t.connections == 1 for t in tabs if t.first != 1)
        assert_exactly_once_in_order(tabs, traffic)
    finally:
        for tab in tabs:
            tab.stop()
        stop_nodes(nodes)


def test_rolling_restart_under_traffic(pg_url: str, tmp_path: Path) -> None:
    nodes = cluster(pg_url, broker("nats"), tmp_path)
    users = [user_id() for _ in range(6)]
    tabs = [Tab(nodes, u, first=i % 3) for i, u in enumerate(users)]
    try:
        _open(tabs)
        with Traffic(nodes, users) as traffic:
            traffic.wait_for(30)
            for node in nodes:
                node.kill(signal.SIGTERM)  # drains: 1012 to its tabs, in-flight publishes end
                assert node.proc is not None and node.proc.returncode in (0, -signal.SIGTERM)
                traffic.wait_for(20)
                node.start()
                traffic.wait_for(20)
        # Every tab was on a node when it restarted, so each reconnected at least once.
        assert all(t.connections >= 2 for t in tabs)
        assert 1012 in [code for t in tabs for code in t.closes]
        assert_exactly_once_in_order(tabs, traffic)
    finally:
        for tab in tabs:
            tab.stop()
        stop_nodes(nodes)


def test_postgres_cut_off_with_live_connections_across_nodes(pg_url: str, tmp_path: Path) -> None:
    from test_postgres import Proxy

    parts = urlsplit(pg_url)
    proxy = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    proxy.start()
    via_proxy = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    nodes = cluster(via_proxy, broker("redis"), tmp_path, count=2)
    users = [user_id(), user_id()]
    tabs = [Tab(nodes, u, first=i) for i, u in enumerate(users)]
    acked: dict[str, list[str]] = {u: [] for u in users}

    def publish(node: Server, user: str) -> int:
        r = node.publish(users=[user])
        if r.status_code == 201:
            acked[user].append(r.json()["id"])
        return r.status_code

    try:
        _open(tabs)
        for u in users:
            assert [publish(n, u) for n in nodes] == [201, 201]
        proxy.cut()
        for u in users:
            assert [publish(n, u) for n in nodes for _ in range(3)] == [503] * 6
        read = httpx.post(
            f"{nodes[1].url}/v1/me/notifications/{acked[users[0]][0]}/read",
            headers=nodes[1].me(users[0]),
        )
        assert read.status_code == 503, read.text
        time.sleep(1)  # the tabs stay connected through the outage
        assert [(t.connections, t.closes) for t in tabs] == [(1, []), (1, [])]

        proxy.start()
        deadline = time.monotonic() + 15
        for node in nodes:
            while publish(node, users[0]) != 201:
                assert time.monotonic() < deadline, "no recovery"
                time.sleep(0.2)
        for u in users:
            assert [publish(n, u) for n in nodes] == [201, 201]
        deadline = time.monotonic() + 10
        while any(len(t.ids()) < len(acked[t.user]) for t in tabs):
            assert time.monotonic() < deadline, [(len(t.ids()), len(acked[t.user])) for t in tabs]
            time.sleep(0.05)
        time.sleep(0.5)
        for tab in tabs:  # exactly what was acknowledged, in order, on the same connection
            assert tab.ids() == acked[tab.user]
            assert tab.connections == 1
            inbox = httpx.get(nodes[0].url + "/v1/me/notifications", headers=nodes[0].me(tab.user))
            assert [i["id"] for i in inbox.json()["items"]] == acked[tab.user][::-1]
    finally:
        for tab in tabs:
            tab.stop()
        stop_nodes(nodes)
        proxy.cut()


def _workers(pid: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    import psutil

    return [
        p.pid
        for p in psutil.Process(pid).children()
        if "resource_tracker" not in " ".join(p.cmdline())
    ]


def _owner(worker_pids: list[int], client_port: int) -> int | None:
    """The worker process holding the server side of the client's TCP connection."""
    import psutil

    for pid in worker_pids:
        for conn in psutil.Process(pid).net_connections(kind="tcp"):
            if conn.raddr and conn.raddr.port == client_port:
                return pid
    return None


def test_workers_serve_one_port_and_share_events(pg_url: str, tmp_path: Path) -> None:
    import psutil

    server = Server(
        tmp_path, {"CLARION_DATABASE_URL": pg_url, "CLARION_BROKER_URL": broker("redis")}
    )
    server.start("--workers", "2")
    tabs = []
    try:
        assert server.proc is not None
        deadline = time.monotonic() + 20
        while len(pids := _workers(server.proc.pid)) < 2:
            assert time.monotonic() < deadline, "workers did not start"
            time.sleep(0.1)
        u = user_id()
        owners: set[int | None] = set()
        # The kernel hands each new connection to whichever worker accepts first: open tabs
        # until both workers hold some (bounded), so that delivery must cross processes.
        while owners != set(pids) and len(tabs) < 40:
            tab = server.connect(u)
            tab.until("unread")
            tabs.append(tab)
            owners.add(_owner(pids, tab.ws.socket.getsockname()[1]))
        assert owners == set(pids), f"connections all landed on {owners} of {pids}"

        for i in range(3):  # each publish is served by one worker; every tab gets it
            r = server.publish(users=[u], title=f"n{i}")
            assert r.status_code == 201, r.text
            for tab in tabs:
                event = tab.until("notification", timeout=2)
                assert (event["notification"]["id"], event["seq"]) == (r.json()["id"], i + 1)
        read = httpx.post(f"{server.url}/v1/me/notifications/read-all", headers=server.me(u))
        assert read.status_code == 200, read.text
        for tab in tabs:
            assert tab.until("state", timeout=2)["unread"] == 0
    finally:
        for tab in tabs:
            tab.close()
        server.kill(signal.SIGTERM)
    assert not any(psutil.pid_exists(pid) for pid in pids), "a worker outlived its server"


def test_workers_refuse_the_in_process_broker(tmp_path: Path) -> None:
    server = Server(tmp_path, {"CLARION_BROKER_URL": "memory://"})
    with pytest.raises(RuntimeError, match="needs a broker"):
        server.start("--workers", "2")
    assert server.proc is not None and server.proc.returncode == 2
