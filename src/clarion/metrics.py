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
        mailer = self.node.mailer
        yield CounterMetricFamily("clarion_email_sent", "emails accepted", value=mailer.sent)
        yield CounterMetricFamily(
            "clarion_email_failed", "emails given up (out of attempts)", value=mailer.failed
        )
        yield CounterMetricFamily(
            "clarion_email_bad",
            "emails refused for good (5xx): address marked bad",
            value=mailer.bad,
        )


def render(node: Node) -> bytes:
    registry = CollectorRegistry()
    registry.register(NodeCollector(node))
    return generate_latest(registry)
