"""Prometheus metrics, read from the node's own counters at scrape time (no hot-path cost).

Names and what an operator does with them: docs/console.md (metrics), the dashboard in
docs/grafana-dashboard.json and the starting alert rules in docs/alerts.yml.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from clarion.node import Node
from clarion.stats import connections_by_transport
from clarion.store.lookup import OutboxStats
from clarion.timings import Timings


class NodeCollector(Collector):
    def __init__(self, node: Node, outbox: dict[str, OutboxStats] | None) -> None:
        self.node = node
        self.outbox = outbox

    def collect(self) -> Iterator[Metric]:
        node, hub = self.node, self.node.hub
        yield GaugeMetricFamily("clarion_connections", "live sessions", value=len(hub.sessions))
        by_transport = GaugeMetricFamily(
            "clarion_transport_connections", "live sessions by transport", labels=["transport"]
        )
        for transport, n in connections_by_transport(node).items():
            by_transport.add_metric([transport], n)
        yield by_transport
        yield GaugeMetricFamily("clarion_streams", "streams followed here", value=len(hub.streams))
        slots = node.poll_slots
        yield GaugeMetricFamily(
            "clarion_poll_slots_busy", "long-polls running in the app", value=slots.busy
        )
        yield GaugeMetricFamily(
            "clarion_poll_slots_peak", "most long-polls ever running at once", value=slots.peak
        )
        yield GaugeMetricFamily(
            "clarion_poll_slots_waiting",
            "long-polls waiting for a slot (CLARION_MAX_HANDSHAKES)",
            value=len(slots.waiting),
        )
        yield CounterMetricFamily(
            "clarion_poll_slots_waited", "long-polls that waited for a slot", value=slots.waited
        )
        yield CounterMetricFamily("clarion_deliveries", "frames written", value=hub.delivered)
        yield CounterMetricFamily(
            "clarion_slow_consumers", "sessions closed as too slow", value=hub.dropped_slow
        )
        yield CounterMetricFamily(
            "clarion_published", "notifications committed", value=node.published
        )
        yield CounterMetricFamily(
            "clarion_broker_reconnects",
            "broker reconnections (each one refills streams from the store)",
            value=hub.broker_resets,
        )
        yield CounterMetricFamily(
            "clarion_broker_publish_failures",
            "events the broker did not take in time (other nodes refill them from the store)",
            value=node.broker_failures,
        )
        yield from _histogram(
            "clarion_handshake_seconds",
            "from a live session's start to live: snapshot and replay, by transport",
            "transport",
            hub.handshakes,
        )
        yield from _histogram(
            "clarion_publish_seconds",
            "a publish from request to acknowledgement: batching, commit, broker",
            None,
            node.publish_times,
        )
        yield from _histogram(
            "clarion_publish_to_socket_seconds",
            "a notification from its publish's acceptance to the write of its frame to this "
            "node's sockets (once per event and node)",
            None,
            hub.socket_latency,
        )
        pusher = node.pusher
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
        if self.outbox is not None:
            due = GaugeMetricFamily(
                "clarion_outbox_due",
                "outbox rows due now, not yet sent (counted up to 100,000)",
                labels=["outbox"],
            )
            for name, stats in self.outbox.items():
                due.add_metric([name], stats.due)
            yield due
            pending = GaugeMetricFamily(
                "clarion_outbox_pending",
                "outbox rows not yet sent, due or waiting for a retry, quiet hours or a lease "
                "(counted up to 100,000)",
                labels=["outbox"],
            )
            for name, stats in self.outbox.items():
                pending.add_metric([name], stats.pending)
            yield pending
            age = GaugeMetricFamily(
                "clarion_outbox_oldest_seconds",
                "how long the oldest due outbox row has waited",
                labels=["outbox"],
            )
            for name, stats in self.outbox.items():
                age.add_metric([name], stats.oldest_due_seconds)
            yield age
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


def _histogram(name: str, doc: str, label: str | None, timings: Timings) -> Iterator[Metric]:
    """One series per label value; without a label, the one series (its key is ignored)."""
    family = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for value in sorted(timings.counts):
        labels = [value] if label else []
        family.add_metric(labels, timings.cumulative(value), sum_value=timings.sums[value])
    yield family


async def render(node: Node) -> bytes:
    registry = CollectorRegistry()
    registry.register(NodeCollector(node, await node.backlogs.read()))
    return generate_latest(registry)
