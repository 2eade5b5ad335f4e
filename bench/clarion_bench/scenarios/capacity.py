"""How many connections several Clarion processes and this machine hold at once."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from clarion_bench.loadgen import IDLE_MS, LoadGen, generator_load, source_addresses
from clarion_bench.noise import wait_quiet
from clarion_bench.proc import PER_WORKER, now_ms
from clarion_bench.targets import Clarion


def capacity(
    binary: Path, cfg: argparse.Namespace, node: str, note: Callable[[str], None]
) -> dict[str, Any]:
    """Several `clarion serve` processes, each on its own port and SQLite file, and one
    generator per server, all unpinned: the first server is given as many WebSocket connections
    as its file limit allows, the others share the rest of the machine-wide target. Checks the
    servers' own counts, holds the connections a while, and sends one notification to `all` on
    every server, which must reach every connection."""
    shares = cfg.capacity_shares
    out: dict[str, Any] = {"target": sum(shares), "shares": shares}
    out["fd_limit"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    out["other_cpu_before"] = wait_quiet(cfg.quiet_wait, note)
    servers: list[Clarion] = []
    lgs: list[LoadGen] = []
    try:
        for i in range(len(shares)):
            note(f"capacity: starting server {i + 1}/{len(shares)}")
            srv = Clarion(cfg.logdir, binary, 1)
            srv.name, srv.core = f"clarion-capacity-{i}", None
            srv.start()
            servers.append(srv)
        time.sleep(cfg.settle)
        rss0 = [s.rss() for s in servers]
        workers = [max(1, math.ceil(share / PER_WORKER)) for share in shares]
        addrs = source_addresses(sum(workers))
        out["source_addresses"] = addrs
        first = 0
        cpu0 = [s.cpu_seconds() for s in servers]
        t0 = time.monotonic()
        for srv, share, k in zip(servers, shares, workers, strict=True):
            lg = LoadGen(node, k, cfg.logdir, core=None)
            lgs.append(lg)
            mine = [addrs[(first + j) % len(addrs)] for j in range(k)]
            first += k
            # About 100 handshakes in flight per server, however many generator processes: more
            # only wait in the server's admission queue, past the generator's timeout.
            lg.start_connect(
                srv.ws_url(), "clarion", share, srv.tokens_file(share), mine, max(10, 100 // k)
            )
        progress: dict[int, int] = {}
        conns = []
        for i, lg in enumerate(lgs):

            def on_progress(msg: dict[str, Any], i: int = i) -> None:
                progress[i] = msg["ok"]
                note(f"capacity: {sum(progress.values()):,}/{sum(shares):,} connected")

            conns.append(lg.wait("connected", 120 + sum(shares) / 100, on_progress))
        wall = time.monotonic() - t0
        ok = sum(c["ok"] for c in conns)
        out["connect"] = {
            "ok": ok,
            "failed": sum(c["failed"] for c in conns),
            "seconds": round(wall, 1),
            "per_second": round(ok / wall),
            "generator": generator_load(
                {
                    "workerCpuMs": [x for c in conns for x in c["workerCpuMs"]],
                    "loopDelayMs": {
                        "p99": max(c["loopDelayMs"]["p99"] for c in conns),
                        "max": max(c["loopDelayMs"]["max"] for c in conns),
                    },
                },
                wall * 1000,
                os.cpu_count() or 1,
            ),
        }
        note(f"capacity: holding {ok:,} connections for {cfg.capacity_hold:.0f} s")
        time.sleep(cfg.capacity_hold)
        per: list[dict[str, Any]] = []
        for srv, share, c, r0, c0 in zip(servers, shares, conns, rss0, cpu0, strict=True):
            rss = srv.rss()
            ready = srv.http.get(f"http://127.0.0.1:{srv.port}/readyz").json()
            per.append(
                {
                    "asked": share,
                    "ok": c["ok"],
                    "failed": c["failed"],
                    "errors": c["errors"],
                    "server_count": ready.get("connections"),
                    "connect_cpu_s": round(srv.cpu_seconds() - c0, 1),
                    "rss_idle_mb": round(r0 / 2**20, 1),
                    "rss_connected_mb": round(rss / 2**20, 1),
                    "kb_per_conn": round((rss - r0) / max(1, c["ok"]) / 1024, 2),
                    "open_files": psutil.Process(srv.proc.pid).num_fds() if srv.proc else None,
                }
            )
        out["servers"] = per
        gen_rss = 0
        for lg in lgs:
            with contextlib.suppress(psutil.Error):
                main = psutil.Process(lg.proc.pid)
                gen_rss += sum(p.memory_info().rss for p in [main, *main.children(True)])
        out["servers_rss_mb"] = round(sum(s.rss() for s in servers) / 2**20)
        out["generator_rss_mb"] = round(gen_rss / 2**20)
        note("capacity: one notification to everyone on every server")
        for lg in lgs:
            lg.send({"cmd": "arm", "burst": 900, "expect": 1})
            lg.wait("armed", 30)
            lg.send({"cmd": "collect", "timeoutMs": 60_000, "idleMs": IDLE_MS})
        sent = now_ms()
        for srv in servers:
            srv.publish(1, cfg.size, 900)
        got = [lg.wait("collected", 90) for lg in lgs]
        received = sum(g["received"] for g in got)
        out["broadcast"] = {
            "received": received,
            "open": sum(g["open"] for g in got),
            "closed": sum(g["closed"] for g in got),
            "ms_to_last": round(max(g["last"] for g in got) - sent, 1) if received else None,
            "p50_ms": round(max((g["latencyMs"]["p50"] or 0) for g in got), 1),
            "p99_ms": round(max((g["latencyMs"]["p99"] or 0) for g in got), 1),
        }
        out["held"] = sum(g["open"] for g in got)
    finally:
        for lg in lgs:
            lg.close()
        for srv in servers:
            srv.stop()
    return out
