#!/usr/bin/env python3
"""Scale-out figures: what a second worker process adds, and what a hop between nodes costs.

    python bench/scaleout.py                          # both scenarios, ~4 min
    python bench/scaleout.py --scenarios workers --conns 2000
    python bench/scaleout.py --scenarios crossnode --brokers redis,nats

Scenarios (`--scenarios`, default both):
  workers    `clarion serve --workers 1` and `--workers 2` on one port, PostgreSQL and Redis,
             the same N WebSocket connections (bench/loadgen), broadcast bursts as in run.py's
             fanout: deliveries/s, and the ratio of 2 workers over 1. The runs alternate
             (1, 2, 1, 2...) so that a machine that gets busier part-way hurts both alike.
             Efficiency: the server processes' CPU seconds over the bursts (/proc/<pid>/stat)
             per million deliveries, and deliveries per server CPU second; 2 workers over 1
             on that figure does not depend on the generator having cores of its own.
  crossnode  two nodes A and B on PostgreSQL and a broker; U users connected to A; personal
             notifications published at a fixed rate, each stamped with its scheduled send
             time (no coordinated omission), first on A (same node), then on B (through the
             broker): publish-to-delivery latency percentiles, HTTP request and commit included.

Needs PostgreSQL (`--postgres`, a fresh database per run, dropped after) and Redis / NATS
(`--redis`, `--nats`; a fresh namespace per run). Nothing is pinned: workers need both cores,
so the load generator shares them (on a 2-core machine it takes CPU the second worker would
use; the report says how much). Results: bench/results/scaleout-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from clarion_bench.efficiency import cpu_use, efficiency
from clarion_bench.loadgen import LoadGen
from clarion_bench.noise import wait_quiet
from clarion_bench.proc import (
    PER_WORKER,
    RESULTS,
    WORK,
    BenchError,
    console,
    ensure_node,
    find_clarion,
    machine,
    proc_cpu_seconds,
    psql,
    raise_fd_limit,
)
from clarion_bench.scenarios.fanout import fanout
from clarion_bench.targets import Clarion, mint_hs256


class Workers(Clarion):
    """`clarion serve --workers N` on PostgreSQL and a broker, on every core."""

    core = None

    def __init__(self, logdir: Path, binary: Path, database_url: str, broker_url: str, n: int):
        super().__init__(logdir, binary, 4, database_url)
        self.broker_url = broker_url
        self.workers = n
        self.name = f"clarion-w{n}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()
        return [*argv, "--workers", str(self.workers)], {
            **env,
            "CLARION_BROKER_URL": self.broker_url,
        }

    def cpu_seconds(self) -> float:
        """The server's processes (the supervisor and its workers), from /proc/<pid>/stat."""
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        return proc_cpu_seconds([main.pid, *(p.pid for p in main.children(recursive=True))])

    def connections_per_worker(self) -> list[int]:
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        procs = [
            p
            for p in main.children(recursive=True)
            if "resource_tracker" not in " ".join(p.cmdline())
        ]
        out = []
        for p in procs or [main]:  # one worker: uvicorn serves in the main process
            conns = p.net_connections(kind="tcp")
            out.append(sum(1 for c in conns if c.status == "ESTABLISHED" and c.raddr))
        return sorted(out, reverse=True)


def workers_scenario(cfg: argparse.Namespace, binary: Path, node: str, db: str) -> dict[str, Any]:
    broker = f"{cfg.redis}?namespace=bench{secrets.token_hex(3)}"
    n = cfg.conns
    runs: dict[str, list[dict[str, Any]]] = {"1": [], "2": []}
    for round_ in range(cfg.rounds):
        for w in (1, 2):
            other = wait_quiet(cfg.quiet_wait, lambda s: console.print(s))
            srv = Workers(cfg.logdir, binary, db, broker, w)
            srv.start()
            lg = None
            try:
                time.sleep(1)
                lg = LoadGen(node, max(1, math.ceil(n / PER_WORKER)), cfg.logdir, core=None)
                conn = lg.connect(srv.ws_url(), "clarion", n, srv.tokens_file(n), lambda m: None)
                if conn["failed"]:
                    raise BenchError(f"{conn['failed']} connections failed: {conn['errors']}")
                spread = srv.connections_per_worker()
                res = fanout(lg, srv, n, cfg, 2000 + 100 * (2 * round_ + w), console.print)
                res.update(cpu_use(res.pop("runs")))
                res.update(round=round_, connections_per_worker=spread, other_cpu_before=other)
                runs[str(w)].append(res)
                console.print(
                    f"workers={w} round {round_ + 1}: {res['rate']:,} deliveries/s, "
                    f"{res['cpu_s_per_million']} server CPU s per million deliveries"
                )
            finally:
                if lg:
                    lg.close()
                srv.stop()
    med = {w: statistics.median(r["rate"] for r in rs if r["rate"]) for w, rs in runs.items()}
    return {
        "connections": n,
        "runs": runs,
        "median": med,
        "ratio": round(med["2"] / med["1"], 2),
        **efficiency(runs),
    }


async def _tab(
    url: str,
    token: str,
    on_notification: Callable[[dict[str, Any]], None],
    ready: asyncio.Event,
    done: asyncio.Event,
) -> None:
    """One user's WebSocket: authenticate, wait for the start, then report notifications."""
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": token}))
        while json.loads(await ws.recv())["type"] != "unread":
            pass
        ready.set()
        while not done.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            event = json.loads(raw)
            if event["type"] == "notification":
                on_notification(event)


async def _latency_run(
    a: Clarion, target: Clarion, users: int, rate: int, seconds: float
) -> dict[str, Any]:
    """U users on A; personal notifications at `rate`/s published on `target`."""

    got: list[float] = []
    names = [f"lat-{secrets.token_hex(4)}-{i}" for i in range(users)]

    def on_notification(event: dict[str, Any]) -> None:
        got.append(time.time() * 1000 - event["notification"]["data"]["t"])

    done = asyncio.Event()
    readies = [asyncio.Event() for _ in names]
    tabs = [
        asyncio.create_task(_tab(a.ws_url(), mint_hs256(a.secret, u), on_notification, r, done))
        for u, r in zip(names, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    count = int(rate * seconds)
    start = time.time() + 0.2
    errors = 0
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(timeout=30, limits=limits) as http:

        async def post(i: int, when: float) -> None:
            nonlocal errors
            r = await http.post(
                f"http://127.0.0.1:{target.port}/v1/notifications",
                json={"users": [names[i % users]], "title": "x", "data": {"t": when * 1000}},
                headers={"Authorization": f"Bearer {target.api_key}"},
            )
            errors += r.status_code != 201

        posts = []
        for i in range(count):
            when = start + i / rate
            await asyncio.sleep(max(0.0, when - time.time()))
            posts.append(asyncio.create_task(post(i, when)))
        await asyncio.gather(*posts)
    for _ in range(200):  # stragglers, 10 s at most
        if len(got) >= count - errors:
            break
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*tabs, return_exceptions=True)
    lat = sorted(got)

    def q(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))], 2) if lat else None

    return {
        "sent": count,
        "errors": errors,
        "received": len(got),
        "latency_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)},
    }


async def _hop_run(a: Clarion, b: Clarion, users: int, rate: int, seconds: float) -> dict[str, Any]:
    """The hop alone: each user has a tab on A and a tab on B; notifications are published on
    A; for each one, its arrival on B minus its arrival on A (one clock, this process). The
    request and the commit are common to both, so what remains is the broker and node B."""

    arrived: dict[str, dict[str, float]] = {"a": {}, "b": {}}
    names = [f"hop-{secrets.token_hex(4)}-{i}" for i in range(users)]

    done = asyncio.Event()
    pairs = [(node, side, u) for u in names for node, side in ((a, "a"), (b, "b"))]
    readies = [asyncio.Event() for _ in pairs]

    def arrival(side: str) -> Callable[[dict[str, Any]], None]:
        def record(event: dict[str, Any]) -> None:
            arrived[side][event["notification"]["id"]] = time.perf_counter() * 1000

        return record

    tabs = [
        asyncio.create_task(_tab(n.ws_url(), mint_hs256(a.secret, u), arrival(side), r, done))
        for (n, side, u), r in zip(pairs, readies, strict=True)
    ]
    await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 60)
    count = int(rate * seconds)
    sent: list[str] = []
    async with httpx.AsyncClient(timeout=30) as http:
        start = time.time()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.time()))
            r = await http.post(
                f"http://127.0.0.1:{a.port}/v1/notifications",
                json={"users": [names[i % users]], "title": "x"},
                headers={"Authorization": f"Bearer {a.api_key}"},
            )
            if r.status_code == 201:
                sent.append(r.json()["id"])
    for _ in range(200):
        if all(i in arrived["a"] and i in arrived["b"] for i in sent):
            break
        await asyncio.sleep(0.05)
    done.set()
    await asyncio.gather(*tabs, return_exceptions=True)
    hops = sorted(
        arrived["b"][i] - arrived["a"][i] for i in sent if i in arrived["a"] and i in arrived["b"]
    )

    def q(p: float) -> float | None:
        return round(hops[min(len(hops) - 1, int(p * len(hops)))], 2) if hops else None

    return {
        "sent": len(sent),
        "received_both": len(hops),
        "hop_ms": {"p50": q(0.5), "p90": q(0.9), "p99": q(0.99), "max": q(1.0)},
    }


def crossnode_scenario(
    cfg: argparse.Namespace, binary: Path, db: str, broker_name: str
) -> dict[str, Any]:
    base = cfg.redis if broker_name == "redis" else cfg.nats
    broker = f"{base}?namespace=bench{secrets.token_hex(3)}"
    a = Workers(cfg.logdir, binary, db, broker, 1)
    b = Workers(cfg.logdir, binary, db, broker, 1)
    a.name, b.name = f"clarion-a-{broker_name}", f"clarion-b-{broker_name}"
    b.secret = a.secret
    a.start()
    try:
        b.after_start = lambda: None  # type: ignore[method-assign]
        b.api_key = a.api_key
        b.start()
        try:
            wait_quiet(cfg.quiet_wait, lambda s: console.print(s))
            out = {}
            for label, target in (("same_node", a), ("cross_node", b)):
                out[label] = asyncio.run(
                    _latency_run(a, target, cfg.latency_users, cfg.latency_rate, cfg.seconds)
                )
                console.print(f"{broker_name} {label}: {out[label]}")
            out["hop"] = asyncio.run(
                _hop_run(a, b, cfg.latency_users, cfg.latency_rate, cfg.seconds)
            )
            console.print(f"{broker_name} hop: {out['hop']}")
            return out
        finally:
            b.stop()
    finally:
        a.stop()


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"# Scale-out benchmark, {report['stamp']}",
        "",
        f"{m.get('cpu', '?')}, {m.get('cpus', '?')} cores. Command: `{report['command']}`",
        "",
    ]
    w = report.get("workers")
    if w:
        lines += [
            f"## Fan-out with 1 and 2 worker processes ({w['connections']:,} connections)",
            "",
            "| workers | round | deliveries/s | p99 ms | server CPU (cores) | server CPU s per "
            "million deliveries | deliveries per server CPU s | generator CPU | other CPU | "
            "connections per worker |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k, runs in w["runs"].items():
            for r in runs:
                lines.append(
                    f"| {k} | {r['round'] + 1} | {r['rate']:,} | {r['latency_ms'].get('p99')} | "
                    f"{r['server_cpu']} | {r.get('cpu_s_per_million')} | "
                    f"{r.get('per_cpu_s') or 0:,} | {r['generator_cpu']} | {r['other_cpu']} | "
                    f"{r['connections_per_worker']} |"
                )
        lines += [
            "",
            f"Median throughput: 1 worker {w['median']['1']:,.0f}/s, 2 workers "
            f"{w['median']['2']:,.0f}/s: **{w['ratio']}x**.",
            "",
        ]
        if "efficiency" in w:
            per, cost = w["per_cpu_s"], w["cpu_s_per_million"]
            lines += [
                f"Per server CPU (the Clarion processes, from /proc/<pid>/stat): 1 worker "
                f"{per['1']:,.0f} deliveries per CPU second ({cost['1']} s per million), 2 "
                f"workers {per['2']:,.0f} ({cost['2']} s per million): efficiency "
                f"**{w['efficiency']}** (2 workers would deliver {2 * w['efficiency']:.2f}x "
                "with a core each).",
                "",
            ]
    c = report.get("crossnode")
    if c:
        cfg = report["config"]
        lines += [
            f"## Publish-to-delivery latency, same node and across nodes "
            f"({cfg['latency_users']} users, {cfg['latency_rate']}/s for {cfg['seconds']} s)",
            "",
            "| broker | path | received/sent | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|---|",
        ]
        for broker, paths in c.items():
            for label, r in paths.items():
                if label == "hop":
                    continue
                lat = r["latency_ms"]
                lines.append(
                    f"| {broker} | {label.replace('_', ' ')} | {r['received']}/{r['sent']} | "
                    f"{lat['p50']} | {lat['p90']} | {lat['p99']} | {lat['max']} |"
                )
        lines += [
            "",
            "The hop alone (one tab per user on each node, published on A: arrival on B minus "
            "arrival on A):",
            "",
            "| broker | both received/sent | p50 ms | p90 ms | p99 ms | max ms |",
            "|---|---|---|---|---|---|",
        ]
        for broker, paths in c.items():
            h = paths.get("hop")
            if h:
                lat = h["hop_ms"]
                lines.append(
                    f"| {broker} | {h['received_both']}/{h['sent']} | {lat['p50']} | "
                    f"{lat['p90']} | {lat['p99']} | {lat['max']} |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scenarios", default="workers,crossnode")
    ap.add_argument("--conns", type=int, default=2000, help="connections (workers)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating 1/2-worker rounds")
    ap.add_argument("--reps", type=int, default=3, help="measured bursts per run")
    ap.add_argument("--deliveries", type=int, default=200_000, help="deliveries per burst")
    ap.add_argument("--brokers", default="redis,nats", help="crossnode brokers")
    ap.add_argument("--latency-users", type=int, default=200)
    ap.add_argument("--latency-rate", type=int, default=200, help="publishes/s")
    ap.add_argument("--seconds", type=float, default=10.0, help="per latency run")
    ap.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432")
    ap.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    ap.add_argument("--nats", default="nats://127.0.0.1:4222")
    ap.add_argument("--clarion", default=None, help="path to the clarion executable")
    ap.add_argument("--quiet-wait", type=float, default=30.0, help="s to wait for a quiet machine")
    cfg = ap.parse_args()
    cfg.scenarios = set(cfg.scenarios.split(","))
    cfg.size, cfg.burst_seconds, cfg.max_bursts = 100, 8, 2 * cfg.reps
    binary = find_clarion(cfg.clarion)
    if binary is None:
        raise SystemExit("no clarion executable: pass --clarion PATH")
    raise_fd_limit()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    cfg.logdir = WORK / "logs" / f"scaleout-{stamp}"
    cfg.logdir.mkdir(parents=True, exist_ok=True)
    node = ensure_node()
    report: dict[str, Any] = {
        "stamp": stamp,
        "command": "python bench/scaleout.py " + " ".join(sys.argv[1:]),
        "machine": machine(),
        "config": {k: v for k, v in vars(cfg).items() if isinstance(v, (int, float, str))},
    }
    base = cfg.postgres.rstrip("/")
    dbname = f"bench_{secrets.token_hex(4)}"
    psql(base, f"CREATE DATABASE {dbname}")
    try:
        db = f"{base}/{dbname}"
        if "workers" in cfg.scenarios:
            report["workers"] = workers_scenario(cfg, binary, node, db)
        if "crossnode" in cfg.scenarios:
            report["crossnode"] = {
                b: crossnode_scenario(cfg, binary, db, b) for b in cfg.brokers.split(",")
            }
    finally:
        psql(base, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"scaleout-{stamp}.json").write_text(json.dumps(report, indent=1))
    text = markdown(report)
    (RESULTS / f"scaleout-{stamp}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
