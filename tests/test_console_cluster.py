"""The console's Live page across nodes (stats.py, store/nodes.py): two real nodes on
PostgreSQL and Redis, each writing its stats snapshot; either one answers for both, and a node
killed without a word drops off after three silent intervals."""

from __future__ import annotations

import secrets
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from harness.cluster import start_nodes, stop_nodes
from harness.server import Server
from harness.services import REDIS_URL, require_service
from harness.util import send, user_id

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]
INTERVAL = 0.3  # seconds between two snapshots of a node: it drops off after 3 without one


@pytest.fixture
def two(pg_url: str, tmp_path: Path) -> Iterator[list[Server]]:
    require_service("Redis", REDIS_URL)
    env = {
        "CLARION_DATABASE_URL": pg_url,
        "CLARION_BROKER_URL": f"{REDIS_URL}?namespace=live{secrets.token_hex(4)}",
        "CLARION_CONSOLE": "true",
        "CLARION_STATS_INTERVAL": str(INTERVAL),
    }
    nodes = start_nodes(tmp_path, 2, env)
    try:
        yield nodes
    finally:
        stop_nodes(nodes)


def live(client: httpx.Client) -> dict[str, Any]:
    r = client.get("/console/api/live")
    assert r.status_code == 200, r.text
    return r.json()


def until(f: Callable[[], dict[str, Any] | None], what: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while (found := f()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return found


def test_either_node_shows_both_and_a_killed_one_drops_off(two: list[Server]) -> None:
    a, b = two
    key = a.cli("keys", "create", "--scope", "admin", "--name", "on-call")
    console = httpx.Client(base_url=b.url, timeout=10)  # a sign-in on one node holds on all
    assert console.post("/console/api/session", json={"key": key}).status_code == 200
    alice, bob = user_id(), user_id()
    tabs = [a.connect(alice), b.connect(bob), b.connect(bob)]
    for tab in tabs:
        tab.until("unread")

    def both() -> dict[str, Any] | None:
        c = live(console)["cluster"]
        per = {n["node"]: n["connections"]["websocket"] for n in c["nodes"]}
        return c if sorted(per.values()) == [1, 2] else None

    cluster = until(both, what="both nodes' snapshots with their connections")
    assert cluster["connections"]["websocket"] == 3
    here = live(console)["node"]
    assert here in {n["node"] for n in cluster["nodes"]}

    # Published on `a`, delivered by both: the cluster's rates and publish-to-socket latency.
    for i in range(20):
        send(a, users=[alice, bob], title=f"tick {i}")
    for tab in tabs:
        for _ in range(20):
            tab.until("notification")

    def moving() -> dict[str, Any] | None:
        c = live(console)["cluster"]
        return c if c["published"] >= 20 and c["delivered"] >= 60 else None

    cluster = until(moving, what="cluster-wide published and delivered")
    assert cluster["latency"]["p50"] is not None and cluster["latency"]["p99"] is not None
    # Each node timed each event it wrote once, not once per session (bob's two tabs).
    metrics = httpx.get(b.url + "/metrics", timeout=10).text
    (count,) = [
        line
        for line in metrics.splitlines()
        if line.startswith("clarion_publish_to_socket_seconds_count")
    ]
    assert float(count.split()[-1]) == 20.0

    def busy() -> dict[str, Any] | None:  # rates are per node and interval: publish meanwhile
        send(a, users=[alice, bob], title="busy")
        c = live(console)["cluster"]
        return c if c["publishes_per_second"] > 0 and c["deliveries_per_second"] > 0 else None

    until(busy, what="publishes and deliveries per second over both nodes")

    b.kill(signal.SIGKILL)  # no clean leave: its row stays, and stops counting
    console = httpx.Client(base_url=a.url, cookies=console.cookies, timeout=10)

    def alone() -> dict[str, Any] | None:
        c = live(console)["cluster"]
        return c if len(c["nodes"]) == 1 else None

    cluster = until(alone, timeout=3 * INTERVAL + 10, what="the killed node to drop off")
    assert cluster["connections"]["websocket"] == 1
    assert cluster["nodes"][0]["node"] == live(console)["node"]
