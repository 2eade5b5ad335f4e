"""Prometheus metrics, read from the node's own counters at scrape time (no hot-path cost)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clarion.node import Node


class NodeCollector(Collector):
    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Metric]:
        hub = self.node.hub
        yield GaugeMetricFamily("clarion_connections", "live sessions", value=len(hub.sessions))
        yield GaugeMetricFamily("clarion_streams", "streams followed here", value=len(hub.streams))
        yield CounterMetricFamily("clarion_deliveries", "frames written", value=hub.delivered)
        yield CounterMetricFamily(
            "clarion_slow_consumers", "sessions closed as too slow", value=hub.dropped_slow
        )
        yield CounterMetricFamily(
            "clarion_published", "notifications committed", value=self.node.published
        )
        pusher = self.node.pusher
        yield CounterMetricFamily("clarion_push_sent", "Web Push accepted", value=pusher.sent)
        yield CounterMetricFamily(
            "clarion_push_failed",
            "Web Push given up (refused or out of attempts)",
            value=pusher.failed,
        )
        yield CounterMetricFamily(
            "clarion_push_gone", "subscriptions removed on 404/410", value=pusher.gone
        )
        yield from ingest_metrics(self.node)


def ingest_metrics(node: Node) -> Iterator[Metric]:
    """Per consumer (label `source`: its URL without a password)."""
    loops = node.consumers.loops
    if not loops:
        return
    families = {
        "consumed": CounterMetricFamily(
            "clarion_ingest_consumed", "messages committed and acked", labels=["source"]
        ),
        "failed": CounterMetricFamily(
            "clarion_ingest_failed",
            "messages handed back to the source to retry (store or source failure)",
            labels=["source"],
        ),
        "dead_lettered": CounterMetricFamily(
            "clarion_ingest_dead_lettered", "messages sent to the dead letter", labels=["source"]
        ),
    }
    lag = GaugeMetricFamily(
        "clarion_ingest_lag",
        "messages waiting at the source (outbox rows, queue depth, pending entries)",
        labels=["source"],
    )
    paused = GaugeMetricFamily(
        "clarion_ingest_paused", "1 while consumption waits for the store", labels=["source"]
    )
    for loop in loops:
        name, c = loop.consumer.name, loop.counters
        families["consumed"].add_metric([name], c.consumed)
        families["failed"].add_metric([name], c.failed)
        families["dead_lettered"].add_metric([name], c.dead_lettered)
        if c.lag is not None:
            lag.add_metric([name], c.lag)
        paused.add_metric([name], 1 if c.state == "paused" else 0)
    yield from families.values()
    yield lag
    yield paused


def render(node: Node) -> bytes:
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    return generate_latest(registry)
