"""The Live page across nodes: each node's stats snapshot, and the cluster merged from them.

With the console on, every node writes a small snapshot of its counters every
`stats_interval` seconds (one row per node in the store: store/nodes.py says why not the
broker). Whichever node answers the console reads the rows and merges them (`merge`, pure):
connections by transport and node, publishes and deliveries per second, publish-to-socket
latency. A node silent for more than `SILENT` intervals (killed, cut off) drops off; one that
stops cleanly removes its row. Rates are computed by each node over its own last interval, so
the sum holds however often the page asks and whichever node answers.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from clarion.presence import node_name
from clarion.timings import BUCKETS, quantile

if TYPE_CHECKING:
    from clarion.node import Node

TRANSPORTS = ("websocket", "sse", "poll")
SILENT = 3  # intervals without a snapshot after which a node is left out
WINDOW = 10  # intervals of publish-to-socket samples a snapshot's latency covers


def connections_by_transport(node: Node) -> dict[str, int]:
    """Live sessions by transport, from the hub's counts (not a pass over every session:
    this runs every `stats_interval`)."""
    counts = node.hub.transports
    return {t: counts.get(t, 0) for t in (*TRANSPORTS, *counts)}


class Stats:
    """This node's snapshots (`publish`, run once) and the cluster's view (`cluster`)."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.name = node_name()
        self.interval = node.settings.stats_interval
        self._last: tuple[float, int, int] | None = None  # at, published, delivered
        self._latency: deque[list[int]] = deque(maxlen=WINDOW + 1)  # cumulative counts

    def snapshot(self, now: float) -> dict[str, Any]:
        node, hub = self.node, self.node.hub
        published, delivered = node.published, hub.delivered
        pub_rate = del_rate = 0.0
        if self._last is not None and now > self._last[0]:
            dt = now - self._last[0]
            pub_rate = max(0, published - self._last[1]) / dt
            del_rate = max(0, delivered - self._last[2]) / dt
        self._last = (now, published, delivered)
        counts = list(hub.socket_latency.counts.get("socket") or [0] * (len(BUCKETS) + 1))
        self._latency.append(counts)
        oldest = self._latency[0]
        return {
            "node": self.name,
            "at": now,
            "connections": connections_by_transport(node),
            "users": len(hub.per_user),
            "published": published,
            "delivered": delivered,
            "publishes_per_second": pub_rate,
            "deliveries_per_second": del_rate,
            "slow_consumers": hub.dropped_slow,
            # publish-to-socket samples of the last WINDOW intervals, per bucket of BUCKETS
            "latency": [n - o for n, o in zip(counts, oldest, strict=True)],
            "draining": node.draining,
        }

    async def publish(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        snap = self.snapshot(now)
        await self.node.store.nodes.put(self.name, orjson.dumps(snap), _utc(now))

    async def cluster(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        rows = await self.node.store.nodes.alive(_utc(now - SILENT * self.interval))
        return merge([orjson.loads(stats) for _, _, stats in rows], now, self.interval)

    async def leave(self) -> None:
        await self.node.store.nodes.leave(self.name)


def merge(snapshots: list[dict[str, Any]], now: float, interval: float) -> dict[str, Any]:
    """The cluster from the nodes' snapshots: those older than SILENT intervals left out,
    counts and rates summed, latency quantiles over every node's samples together."""
    alive = sorted(
        (s for s in snapshots if now - s["at"] <= SILENT * interval), key=lambda s: s["node"]
    )
    connections: Counter[str] = Counter(dict.fromkeys(TRANSPORTS, 0))
    latency = [0] * (len(BUCKETS) + 1)
    nodes = []
    for s in alive:
        connections.update(s["connections"])
        latency = [a + b for a, b in zip(latency, s["latency"], strict=True)]
        nodes.append(
            {
                "node": s["node"],
                "age": max(0.0, now - s["at"]),
                "connections": s["connections"],
                "users": s["users"],
                "publishes_per_second": s["publishes_per_second"],
                "deliveries_per_second": s["deliveries_per_second"],
                "latency": _quantiles(s["latency"]),
                "draining": s["draining"],
            }
        )
    return {
        "nodes": nodes,
        "connections": dict(connections),
        "publishes_per_second": sum(s["publishes_per_second"] for s in alive),
        "deliveries_per_second": sum(s["deliveries_per_second"] for s in alive),
        "published": sum(s["published"] for s in alive),
        "delivered": sum(s["delivered"] for s in alive),
        "slow_consumers": sum(s["slow_consumers"] for s in alive),
        "latency": _quantiles(latency),
    }


def _quantiles(counts: list[int]) -> dict[str, float | None]:
    return {"p50": quantile(BUCKETS, counts, 0.5), "p99": quantile(BUCKETS, counts, 0.99)}


def _utc(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
