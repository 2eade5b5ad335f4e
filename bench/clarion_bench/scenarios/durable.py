"""Durable personal notifications through the HTTP API, single, batch and many per request."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
from collections.abc import Callable
from typing import Any

import psutil

from clarion_bench.loadgen import http_tool
from clarion_bench.noise import Sample, net_counters, wait_quiet
from clarion_bench.proc import BenchError
from clarion_bench.scenarios.fanout import wait_server_idle
from clarion_bench.targets import Clarion


def durable(
    target: Clarion, cfg: argparse.Namespace, node: str, note: Callable[[str], None]
) -> dict[str, Any]:
    """Many concurrent POST /v1/notifications to personal recipients (`users`), one user per
    request (single), 100 users per request (batch), and 100 one-user notifications per
    `POST /v1/notifications/batch` (many): notifications and recipients accepted per second,
    each a durable row before the answer."""
    out: dict[str, Any] = {"database": target.database_url.split(":", 1)[0]}
    out["other_cpu_before"] = wait_quiet(cfg.quiet_wait, note)
    target.start()
    try:
        for label, batch, many in (("single", 1, 0), ("batch", 100, 0), ("many", 1, 100)):
            note(
                f"durable {label}: {cfg.durable_concurrency} in flight, {cfg.durable_seconds:.0f} s"
            )
            wait_server_idle(target)
            me = psutil.Process()
            busy0, me0 = Sample._busy(), sum(me.cpu_times()[:2])
            net0 = net_counters()
            cpu0 = target.cpu_seconds()
            ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            argv = http_tool(
                node,
                "post",
                "--url",
                f"http://127.0.0.1:{target.port}",
                "--key",
                target.api_key,
                "--concurrency",
                str(cfg.durable_concurrency),
                "--seconds",
                str(cfg.durable_seconds),
                "--batch",
                str(batch),
                "--many",
                str(many),
            )
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=cfg.durable_seconds + 60
            )
            ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            if done.returncode:
                raise BenchError(f"http.mjs post failed: {done.stderr[-500:]}")
            res = json.loads(done.stdout.strip().splitlines()[-1])
            wall = res["seconds"]
            server = target.cpu_seconds() - cpu0
            client = (ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)
            other = Sample._busy() - busy0 - server - client - (sum(me.cpu_times()[:2]) - me0)
            net1 = net_counters()
            out[label] = {
                "batch": batch,
                "many": many,
                "concurrency": cfg.durable_concurrency,
                "requests": res["ok"],
                "statuses": res["statuses"],
                "notifications_per_s": round(res["perSecond"]),
                "recipients_per_s": round(res["recipientsPerSecond"]),
                "latency_ms": {k: round(v, 2) if v else v for k, v in res["latencyMs"].items()},
                "server_cpu": round(server / wall, 2),
                "client_cpu": round(client / wall, 2),
                "other_cpu": round(max(0.0, other) / wall, 2),
                **{k: net1[k] - net0[k] for k in net0},
            }
    finally:
        target.stop()
    return out
