"""The broker dies mid-traffic: a private Redis or NATS server (our own process on a free
loopback port, never the machine's shared one) is killed with SIGKILL while two nodes serve tabs
and publishers keep publishing, then started again on the same port. Publishes go on being
acknowledged (the store is the truth), the tabs stay connected, the nodes reconnect and refill
their streams from the store, and every 201 reaches its tab exactly once, in order.

Needs PostgreSQL, and redis-server / nats-server installed: skipped without them, failed without
them in CI.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.cluster import Tab, Traffic, assert_exactly_once_in_order, start_nodes, stop_nodes
from harness.server import Server
from harness.services import PrivateService
from harness.util import eventually, user_id

pytestmark = pytest.mark.slow  # a whole-system run: `make test-slow`


@pytest.fixture(params=["redis", "nats"])
def service(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateService]:
    folder = tmp_path / request.param
    folder.mkdir()
    svc = PrivateService(request.param, folder).start()
    try:
        yield svc
    finally:
        svc.kill()


def _reconnected(nodes: list[Server], kind: str, before: list[int]) -> bool:
    """Each node logged a reconnection of its broker since `before` (its log sizes)."""
    return all(
        f"{kind} broker reconnected" in n.log()[size:]
        for n, size in zip(nodes, before, strict=True)
    )


def _metrics(node: Server) -> dict[str, float]:
    text = httpx.get(node.url + "/metrics", timeout=10).text
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("clarion_broker_")
    }


def test_broker_killed_and_restarted_mid_traffic(
    service: PrivateService, pg_url: str, tmp_path: Path
) -> None:
    broker_url = f"{service.url}?namespace=o{secrets.token_hex(3)}"
    nodes = start_nodes(
        tmp_path, 2, {"CLARION_DATABASE_URL": pg_url, "CLARION_BROKER_URL": broker_url}
    )
    users = [user_id() for _ in range(4)]
    tabs = [Tab(nodes, u, first=i % 2) for i, u in enumerate(users)]
    try:
        for tab in tabs:
            tab.start()
        eventually(lambda: all(t.connections for t in tabs), 20, "the tabs to connect", 0.05)
        with Traffic(nodes, users) as traffic:
            traffic.wait_for(30)
            before = [len(n.log()) for n in nodes]
            service.kill()
            traffic.wait_for(30)  # acknowledged while the broker is down: stored, not carried
            service.start()
            deadline = time.monotonic() + 20
            while not _reconnected(nodes, service.kind, before):
                assert time.monotonic() < deadline, [n.log()[-2000:] for n in nodes]
                time.sleep(0.1)
            traffic.wait_for(30)
        assert_exactly_once_in_order(tabs, traffic)
        # The outage shows in the metrics an operator alerts on (docs/alerts.yml).
        counts = [_metrics(n) for n in nodes]
        assert all(c["clarion_broker_reconnects_total"] >= 1 for c in counts), counts
        if service.kind == "redis":  # (nats-py buffers publishes while it reconnects)
            assert sum(c["clarion_broker_publish_failures_total"] for c in counts) >= 1, counts
        assert [t.connections for t in tabs] == [1] * len(tabs), "a tab had to reconnect"

        # Live delivery goes through the broker again, on the streams followed before the
        # outage. The nodes' own check of the store runs every 5 s, so three publishes in a row
        # that each reach a tab on the other node within 1.5 s came through the broker.
        tab = tabs[0]  # on nodes[0]
        for i in range(3):
            r = nodes[1].publish(users=[tab.user], title=f"probe {i}")
            assert r.status_code == 201, r.text
            nid = r.json()["id"]
            eventually(lambda nid=nid: nid in tab.ids(), 1.5, "the broker to carry it", 0.01)
    finally:
        for tab in tabs:
            tab.stop()
        stop_nodes(nodes)
