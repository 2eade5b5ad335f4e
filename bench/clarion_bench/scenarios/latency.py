"""Publish-to-socket latency of durable personal notifications with many users connected."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clarion_bench.loadgen import LoadGen, gen_load, http_tool
from clarion_bench.noise import Sample, wait_quiet
from clarion_bench.proc import PER_WORKER, BenchError
from clarion_bench.scenarios.fanout import wait_server_idle
from clarion_bench.targets import Clarion


def personal_latency(
    binary: Path,
    cfg: argparse.Namespace,
    node: str,
    note: Callable[[str], None],
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """N users connected over WebSocket, each a distinct user; bench/loadgen/http.mjs publishes
    durable personal notifications (`users: [one random user]`) at a fixed rate through the HTTP
    API, each stamped with the instant its request is sent; the generator records when it
    arrives on that user's socket. One run per entry of `--latency-rates`."""
    n = cfg.latency_users
    srv = Clarion(cfg.logdir, binary, 1)
    srv.extra_env = env or {}
    srv.name = "clarion-latency" + "".join(f"-{k}={v}" for k, v in srv.extra_env.items())
    out: dict[str, Any] = {"users": n, "env": srv.extra_env, "runs": {}}
    out["other_cpu_before"] = wait_quiet(cfg.quiet_wait, note)
    srv.start()
    lg = None
    try:
        time.sleep(cfg.settle)
        lg = LoadGen(node, max(1, math.ceil(n / PER_WORKER)), cfg.logdir)
        t0 = time.monotonic()
        conn = lg.connect(
            srv.ws_url(),
            "clarion",
            n,
            srv.tokens_file(n),
            lambda m: note(f"latency: connecting {m['ok']:,}/{n:,}"),
        )
        out["connect"] = {
            "ok": conn["ok"],
            "failed": conn["failed"],
            "seconds": round(time.monotonic() - t0, 1),
        }
        if conn["failed"]:
            raise BenchError(f"latency: {conn['failed']} connections failed: {conn['errors']}")
        for k, rate in enumerate(cfg.latency_rates):
            burst = 500 + k
            note(f"latency: {rate:,} personal notifications/s to {n:,} users")
            time.sleep(cfg.settle)
            wait_server_idle(srv)
            lg.send({"cmd": "arm", "burst": burst, "expect": 0})
            lg.wait("armed", 30)
            before = Sample(srv, lg)
            cpu0 = srv.cpu_seconds()
            argv = http_tool(
                node,
                "personal",
                "--url",
                f"http://127.0.0.1:{srv.port}",
                "--key",
                srv.api_key,
                "--rate",
                str(rate),
                "--seconds",
                str(cfg.latency_seconds),
                "--users",
                str(n),
                "--burst",
                str(burst),
            )
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=cfg.latency_seconds + 120
            )
            if done.returncode:
                raise BenchError(f"http.mjs personal failed: {done.stderr[-500:]}")
            pub = json.loads(done.stdout.strip().splitlines()[-1])
            lg.send({"cmd": "collect", "timeoutMs": 60_000, "idleMs": 2000})
            res = lg.wait("collected", 90)
            server_cpu = srv.cpu_seconds() - cpu0
            use = Sample(srv, lg).since(before)
            wall_ms = pub["seconds"] * 1000
            out["runs"][str(rate)] = {
                "rate": rate,
                "published": pub["ok"],
                "statuses": pub["statuses"],
                "received": res["received"],
                "achieved_per_s": round(pub["perSecond"]),
                "latency_ms": {
                    k: round(v, 2) if v is not None else None for k, v in res["latencyMs"].items()
                },
                "cdf": [[q, round(v, 2) if v is not None else None] for q, v in res["cdf"]],
                "publish_201_ms": {
                    k: round(v, 2) if v is not None else None for k, v in pub["latencyMs"].items()
                },
                "publisher": {
                    "cpu": round(pub["cpu"], 2),
                    "lag_p99_ms": round(pub["lagMs"]["p99"] or 0, 2),
                    "max_in_flight": pub["maxInflight"],
                    "saturated": pub["saturated"],
                },
                # The generator shares core 1 with the publisher.
                "generator": gen_load(res, wall_ms, pub["cpu"]),
                "server_cpu": round(server_cpu * 1000 / wall_ms, 2),
                "stale": res["stale"],
                "bad": res["bad"],
                "lost_connections": res["closed"],
                **use,
            }
    finally:
        if lg:
            lg.close()
        srv.stop()
    return out
