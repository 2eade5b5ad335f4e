#!/usr/bin/env python3
"""Topics at scale: a notification to a topic with many followers is stored once.

    python bench/topics.py                  # 100,000 followers, 10,000 of them connected
    python bench/topics.py --followers 20000 --conns 2000 --publishes 100   # quick

Two measurements on one Clarion server (SQLite, pinned to core 0; generator on core 1):
  publish   the time `POST /v1/notifications` takes to answer, to one user and to a topic
            with F followers, interleaved (one user, topic, one user, ...), sequential requests:
            medians, p99 and their ratio. Stored once means the ratio stays near 1.
  fanout    N of the followers connected over WebSocket (bench/loadgen); bursts published to
            the topic, as run.py's fan-out does with `all`: deliveries/s.
Subscribing the followers goes through the publisher API (`PUT /v1/topics/T/subscribers`,
1,000 users per request); its rate is reported too. Results: bench/results/topics-<stamp>.*
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from clarion_bench.loadgen import LoadGen
from clarion_bench.proc import (
    PER_WORKER,
    RESULTS,
    WORK,
    BenchError,
    ensure_node,
    find_clarion,
    machine,
    raise_fd_limit,
)
from clarion_bench.scenarios.fanout import fanout
from clarion_bench.targets import Clarion
from rich.progress import Progress

TOPIC = "bench"


class TopicTarget(Clarion):
    """Clarion publishing each burst to one topic (or, as the baseline, to `all`)."""

    audience: dict[str, Any] = {"topics": [TOPIC]}


def subscribe(target: TopicTarget, followers: int, note: Any) -> float:
    """Subscribe bench-0 .. bench-(F-1); returns users subscribed per second."""
    url = f"http://127.0.0.1:{target.port}/v1/topics/{TOPIC}/subscribers"
    headers = {"Authorization": f"Bearer {target.api_key}"}
    t0 = time.monotonic()
    with httpx.Client(timeout=60) as client:
        for start in range(0, followers, 1000):
            users = [f"bench-{i}" for i in range(start, min(followers, start + 1000))]
            r = client.put(url, json={"users": users}, headers=headers)
            if r.status_code != 200:
                raise BenchError(f"subscribe answered {r.status_code}: {r.text[:300]}")
            note(f"subscribed {start + len(users):,}/{followers:,}")
    return followers / (time.monotonic() - t0)


def publish_times(target: TopicTarget, count: int) -> dict[str, Any]:
    """Answer times of sequential publishes, to one user and to the topic, interleaved."""
    url = f"http://127.0.0.1:{target.port}/v1/notifications"
    headers = {"Authorization": f"Bearer {target.api_key}"}
    times: dict[str, list[float]] = {"user": [], "topic": []}
    with httpx.Client(timeout=30) as client:
        for i in range(count * 2):
            kind = "user" if i % 2 == 0 else "topic"
            audience = {"users": ["bench-0"]} if kind == "user" else {"topics": [TOPIC]}
            t0 = time.perf_counter()
            r = client.post(url, json={**audience, "title": f"p{i}"}, headers=headers)
            elapsed = (time.perf_counter() - t0) * 1000
            if r.status_code != 201:
                raise BenchError(f"publish answered {r.status_code}: {r.text[:300]}")
            if i >= 20:  # the first few warm the connection and caches
                times[kind].append(elapsed)
    out: dict[str, Any] = {}
    for kind, values in times.items():
        values.sort()
        out[kind] = {
            "median_ms": round(statistics.median(values), 3),
            "p99_ms": round(values[int(len(values) * 0.99) - 1], 3),
            "count": len(values),
        }
    out["ratio_median"] = round(out["topic"]["median_ms"] / out["user"]["median_ms"], 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--followers", type=int, default=100_000)
    ap.add_argument("--conns", type=int, default=10_000)
    ap.add_argument("--publishes", type=int, default=300, help="of each kind")
    ap.add_argument("--concurrency", type=int, default=4, help="publishes in flight in a burst")
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--out", default=str(RESULTS))
    cfg = ap.parse_args()
    cfg.deliveries, cfg.burst_seconds, cfg.reps, cfg.max_bursts = 400_000, 3.0, 3, 6
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.logdir = WORK / "logs" / f"topics-{stamp}"
    cfg.logdir.mkdir(parents=True, exist_ok=True)
    raise_fd_limit()
    node = ensure_node()
    binary = find_clarion(None)
    if binary is None:
        raise SystemExit("clarion executable not found (make install)")
    target = TopicTarget(cfg.logdir, binary, cfg.concurrency)
    report: dict[str, Any] = {
        "stamp": stamp,
        "machine": machine(),
        "followers": cfg.followers,
        "connections": cfg.conns,
    }
    with Progress() as progress:
        task = progress.add_task("topics", total=None)

        def note(text: str) -> None:
            progress.update(task, description=text)

        target.start()
        lg = None
        try:
            report["subscribe_per_s"] = round(subscribe(target, cfg.followers, note))
            note("publish answer times")
            report["publish"] = publish_times(target, cfg.publishes)
            lg = LoadGen(node, max(1, -(-cfg.conns // PER_WORKER)), cfg.logdir)
            conn = lg.connect(
                target.ws_url(),
                target.protocol,
                cfg.conns,
                target.tokens_file(cfg.conns),
                lambda m: note(f"connecting {m['ok']:,}/{cfg.conns:,}"),
            )
            report["connect"] = {"ok": conn["ok"], "failed": conn["failed"]}
            # Topic and `all` bursts alternate, so a machine that gets busier hurts both alike.
            fans: dict[str, list[dict[str, Any]]] = {"topic": [], "all": []}
            for rep in range(2):
                for kind, audience in (("topic", {"topics": [TOPIC]}), ("all", {"all": True})):
                    target.audience = audience
                    burst0 = 5000 + 1000 * len(fans[kind]) + (0 if kind == "topic" else 500)
                    note(f"fan-out to {kind} ({rep + 1}/2)")
                    fans[kind].append(fanout(lg, target, conn["ok"], cfg, burst0, note))
            for kind, runs in fans.items():
                best = max(runs, key=lambda r: r["rate"] or 0)
                report[f"fanout_{kind}"] = {
                    k: v for k, v in best.items() if k not in ("runs", "cdf")
                }
                report[f"fanout_{kind}"]["rates"] = [r["rate"] for r in runs]
            report["fanout"] = report["fanout_topic"]
            report["fanout_ratio"] = round(
                (report["fanout_topic"]["rate"] or 0) / max(1, report["fanout_all"]["rate"] or 1), 2
            )
        finally:
            if lg:
                lg.close()
            target.stop()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"topics-{stamp}.json").write_text(json.dumps(report, indent=1))
    p = report["publish"]
    md = [
        f"## Topics: {cfg.followers:,} followers, {cfg.conns:,} connected",
        "",
        "| measure | one user | topic | ratio |",
        "|---|---:|---:|---:|",
        f"| publish answered, median | {p['user']['median_ms']} ms | {p['topic']['median_ms']} ms"
        f" | {p['ratio_median']}x |",
        f"| publish answered, p99 | {p['user']['p99_ms']} ms | {p['topic']['p99_ms']} ms | |",
        "",
        f"Fan-out to {conn['ok']:,} connected followers: topic "
        f"**{report['fanout_topic']['rate']:,} deliveries/s**, `all` (same connections, same "
        f"run) {report['fanout_all']['rate']:,}/s: ratio **{report['fanout_ratio']}x** (best "
        f"of 2 alternating measurements each; complete: {report['fanout_topic']['complete']}). "
        f"Subscribing the followers: {report['subscribe_per_s']:,} users/s through "
        "`PUT /v1/topics/{topic}/subscribers`.",
    ]
    (out / f"topics-{stamp}.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
