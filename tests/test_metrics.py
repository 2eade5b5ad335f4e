"""Metrics (metrics.py, timings.py), and the dashboard and alert rules built on them: every
metric name they use must exist in the /metrics output of a real server."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import httpx
import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from clarion.timings import Timings
from harness.server import Server
from harness.util import eventually, send, user_id

DOCS = Path(__file__).parents[1] / "docs"
NAME = re.compile(r"\bclarion_[a-z0-9_]+")


def exposed(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample name in /metrics (histograms' _bucket/_sum/_count, counters' _total, and
    families with no sample yet) -> its samples by labels."""
    text = httpx.get(server.url + "/metrics").text
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}
        for suffix in suffixes.get(family.type, [""]):
            out.setdefault(family.name + suffix, {})
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_new_metrics_move_with_traffic(server: Server) -> None:
    user = user_id()
    live = server.connect(user)
    before = exposed(server)
    send(server, users=[user], title="counted")
    live.until("notification")
    after = exposed(server)
    assert after["clarion_published_total"][()] > before["clarion_published_total"][()]
    assert after["clarion_transport_connections"][(("transport", "websocket"),)] >= 1
    assert (("transport", "sse"),) in after["clarion_transport_connections"]
    hs = after["clarion_handshake_seconds_count"]
    assert hs[(("transport", "websocket"),)] >= 1
    assert after["clarion_publish_seconds_count"][()] >= 1
    assert after["clarion_publish_seconds_bucket"][(("le", "+Inf"),)] >= 1
    assert after["clarion_outbox_due"][(("outbox", "push"),)] >= 0
    assert (("outbox", "push"),) in after["clarion_outbox_oldest_seconds"]
    assert after["clarion_broker_reconnects_total"][()] >= 0
    assert after["clarion_broker_publish_failures_total"][()] == 0
    live.close()
    eventually(
        lambda: (
            exposed(server)["clarion_transport_connections"][(("transport", "websocket"),)]
            < after["clarion_transport_connections"][(("transport", "websocket"),)]
        ),
        what="the websocket count to drop",
    )


def test_publish_to_socket_is_timed_once_per_event_and_node(server: Server) -> None:
    """From the publish's acceptance to the write of the frame: one sample per event, however
    many of this node's sockets it went to (three tabs here)."""
    user = user_id()
    tabs = [server.connect(user) for _ in range(3)]
    for tab in tabs:
        tab.until("unread")
    name = "clarion_publish_to_socket_seconds_count"
    before = exposed(server).get(name, {}).get((), 0.0)
    for i in range(5):
        send(server, users=[user], title=f"timed {i}")
    for tab in tabs:
        for _ in range(5):
            tab.until("notification")
        tab.close()
    after = exposed(server)
    assert after[name][()] == before + 5
    inf = after["clarion_publish_to_socket_seconds_bucket"][(("le", "+Inf"),)]
    assert inf == after[name][()] and after["clarion_publish_to_socket_seconds_sum"][()] > 0
    # The email and webhook outboxes report beside push.
    for outbox in ("push", "email", "webhook"):
        assert after["clarion_outbox_due"][(("outbox", outbox),)] >= 0
        assert (("outbox", outbox),) in after["clarion_outbox_oldest_seconds"]
        assert after["clarion_outbox_pending"][(("outbox", outbox),)] >= 0


def _names(text: str) -> set[str]:
    return set(NAME.findall(text))


def test_dashboard_uses_only_exposed_metrics(server: Server) -> None:
    dashboard = orjson.loads((DOCS / "grafana-dashboard.json").read_bytes())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) >= 10 and dashboard["uid"]
    used = set().union(*(_names(e) for e in exprs))
    assert used - set(exposed(server)) == set()
    assert len(used) >= 10


def test_alert_rules_parse_and_use_only_exposed_metrics(server: Server) -> None:
    rules = yaml.safe_load((DOCS / "alerts.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert all(r["alert"] and r["expr"] and r["annotations"]["summary"] for r in alerts)
    used = set().union(*(_names(str(r["expr"])) for r in alerts))
    assert used - set(exposed(server)) == set()
    assert "clarion_outbox_oldest_seconds" in used


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="no promtool (scripts/ensure-promtool installs it)"
)
def test_alert_rules_pass_promtool() -> None:
    out = subprocess.run(
        ["promtool", "check", "rules", str(DOCS / "alerts.yml")], capture_output=True, timeout=60
    )
    assert out.returncode == 0, out.stdout.decode() + out.stderr.decode()


def test_timings_buckets_and_quantiles() -> None:
    t = Timings((0.01, 0.1, 1.0))
    for seconds in (0.005, 0.05, 0.05, 0.5, 5.0):
        t.observe("ws", seconds)
    assert t.cumulative("ws") == [("0.01", 1), ("0.1", 3), ("1.0", 4), ("+Inf", 5)]
    assert t.quantile("ws", 0.5) == 0.1
    assert t.quantile("ws", 0.99) == 1.0  # beyond the last bound: the last bound
    assert t.quantile("sse", 0.5) is None
    assert abs(t.sums["ws"] - 5.605) < 1e-9
