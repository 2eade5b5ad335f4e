"""Broadcast fan-out: bursts to every connection, deliveries/s and latency per burst."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from clarion_bench.loadgen import IDLE_MS, LoadGen
from clarion_bench.noise import NOISY, Sample
from clarion_bench.proc import now_ms
from clarion_bench.targets import Target


def wait_server_idle(target: Target, limit: float = 30.0) -> None:
    """Lets a server finish what it still has to send (say, the rest of a burst that was cut
    short) before the next measurement starts."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        c0 = target.cpu_seconds()
        time.sleep(0.25)
        if target.cpu_seconds() - c0 < 0.25 * 0.05:
            return


def run_burst(
    lg: LoadGen,
    target: Target,
    burst: int,
    count: int,
    size: int,
    timeout: float,
    coalesce: bool = False,
) -> dict[str, Any]:
    wait_server_idle(target)
    lg.send({"cmd": "arm", "burst": burst, "expect": count})
    lg.wait("armed", 30)
    lg.send({"cmd": "collect", "timeoutMs": int(timeout * 1000), "idleMs": IDLE_MS})
    before = Sample(target, lg)
    cpu0, t0 = target.cpu_seconds(), now_ms()
    target.publish(count, size, burst, coalesce=coalesce)
    res = lg.wait("collected", timeout + 30)
    cpu = target.cpu_seconds() - cpu0
    machine_use = Sample(target, lg).since(before)
    busy_ms = max(1.0, res["last"] - t0) if res["received"] else None
    span_s = res["spanMs"] / 1000 if res["spanMs"] else None
    return {
        "messages": count,
        "received": res["received"],
        "expected": res["expected"],
        "rate": round(res["rate"]) if res["rate"] else None,
        "span_s": round(span_s, 3) if span_s else None,
        "latency_ms": {
            k: round(v, 2) if v is not None else None for k, v in res["latencyMs"].items()
        },
        "cdf": [[q, round(v, 2) if v is not None else None] for q, v in res.get("cdf", [])],
        "server_cpu": round(cpu * 1000 / busy_ms, 2) if busy_ms else None,
        "server_cpu_s": round(cpu, 3),  # CPU seconds of the server's processes over the burst
        "generator_cpu": round(sum(res["workerCpuMs"]) / res["spanMs"], 2) if span_s else None,
        "lost_connections": res["closed"],
        "bad": res["bad"],
        "stale": res["stale"],
        **machine_use,
    }


def per_cpu_second(bursts: list[dict[str, Any]]) -> int | None:
    """Deliveries received per CPU second of the server's processes, over these bursts."""
    cpu = sum(b.get("server_cpu_s") or 0.0 for b in bursts)
    return round(sum(b["received"] for b in bursts) / cpu) if cpu > 0 else None


def fanout(
    lg: LoadGen,
    target: Target,
    n: int,
    cfg: argparse.Namespace,
    burst0: int,
    note: Callable[[str], None],
    coalesce: bool = False,
) -> dict[str, Any]:
    """Warm up with a small burst, size the bursts so each lasts a few seconds at most, then
    measure `reps` bursts. A burst during which other processes were busy is repeated (up to
    `reps` more times, except with --quick); the reported figure is the median by rate of the
    quiet bursts (of all of them if none was quiet)."""
    note("fan-out warm-up")
    warm = run_burst(lg, target, burst0, max(1, 10_000 // n), cfg.size, 60, coalesce)
    est = warm["rate"] or 1000
    per_conn = cfg.deliveries // n
    per_conn = max(2, min(per_conn, int(est * cfg.burst_seconds / n)))
    runs: list[dict[str, Any]] = []
    quiet: list[dict[str, Any]] = []
    while len(quiet) < cfg.reps and len(runs) < cfg.max_bursts:
        note(f"fan-out burst {len(runs) + 1} ({per_conn} x {n:,})")
        run = run_burst(lg, target, burst0 + 1 + len(runs), per_conn, cfg.size, 120, coalesce)
        runs.append(run)
        if run["other_cpu"] <= NOISY:
            quiet.append(run)
        if run["rate"] and run["rate"] > est:  # a noisy warm-up must not shrink every burst
            est = run["rate"]
            per_conn = max(2, min(cfg.deliveries // n, int(est * cfg.burst_seconds / n)))
    chosen = quiet or runs
    rated = sorted((r for r in chosen if r["rate"]), key=lambda r: r["rate"])
    median = rated[len(rated) // 2] if rated else chosen[-1]
    return {
        "rate": median["rate"],
        "rates": [r["rate"] for r in chosen],
        "latency_ms": median["latency_ms"],
        "cdf": median.get("cdf"),
        "server_cpu": median["server_cpu"],
        # Deliveries per CPU second of the server over the bursts: what a delivery costs, which
        # other work on a shared machine changes far less than it changes deliveries/s.
        "per_cpu_s": per_cpu_second(chosen),
        "generator_cpu": median["generator_cpu"],
        "other_cpu": max(r["other_cpu"] for r in chosen),
        "stalls": sum(r["timeouts"] + r["softnet_drops"] for r in chosen),
        "complete": all(r["received"] == r["expected"] for r in chosen),
        "runs": runs,
    }
