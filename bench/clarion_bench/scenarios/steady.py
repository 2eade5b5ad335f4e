"""Steady delivery at a fixed rate, stamped with the scheduled time (no coordinated
omission)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from clarion_bench.loadgen import IDLE_MS, LoadGen
from clarion_bench.noise import Sample
from clarion_bench.proc import BenchError
from clarion_bench.scenarios.fanout import wait_server_idle
from clarion_bench.targets import Target


def steady(
    lg: LoadGen,
    target: Target,
    n: int,
    cfg: argparse.Namespace,
    burst: int,
    note: Callable[[str], None],
) -> dict[str, Any]:
    """One payload to all connections at a fixed pace so that deliveries/s = cfg.rate. Each
    payload is stamped with its scheduled time, so a server that falls behind shows it in the
    latency (no coordinated omission)."""
    per_s = cfg.rate / n
    count = max(2, round(per_s * cfg.steady_seconds))
    interval = 1 / per_s
    note(f"steady {cfg.rate:,}/s: {count} payloads every {interval * 1000:.0f} ms")
    wait_server_idle(target)
    lg.send({"cmd": "arm", "burst": burst, "expect": count})
    lg.wait("armed", 30)
    idle_ms = int(max(IDLE_MS, 3000 * interval))
    lg.send(
        {"cmd": "collect", "timeoutMs": int((cfg.steady_seconds + 60) * 1000), "idleMs": idle_ms}
    )
    before = Sample(target, lg)
    cpu0 = target.cpu_seconds()
    start = time.time() + 0.05
    errors: list[BaseException] = []
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = []
        for i in range(count):
            when = start + i * interval
            time.sleep(max(0.0, when - time.time()))
            futures.append(pool.submit(target.publish, 1, cfg.size, burst, when * 1000))
        for f in futures:
            try:
                f.result(timeout=120)
            except Exception as exc:
                errors.append(exc)
    res = lg.wait("collected", cfg.steady_seconds + 90)
    cpu = target.cpu_seconds() - cpu0
    machine_use = Sample(target, lg).since(before)
    if errors:
        raise BenchError(f"steady: {len(errors)} publishes failed: {errors[0]}")
    # A server that keeps up delivers `rate` over the schedule's length; one that falls behind
    # takes longer.
    wall = max(count * interval, res["last"] / 1000 - start) if res["received"] else None
    return {
        "target_rate": cfg.rate,
        "payloads": count,
        "received": res["received"],
        "expected": res["expected"],
        "rate": round(res["received"] / wall) if wall else None,
        "latency_ms": {
            k: round(v, 2) if v is not None else None for k, v in res["latencyMs"].items()
        },
        "cdf": [[q, round(v, 2) if v is not None else None] for q, v in res.get("cdf", [])],
        "server_cpu": round(cpu / wall, 2) if wall else None,
        "lost_connections": res["closed"],
        **machine_use,
    }
