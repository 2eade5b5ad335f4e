"""One server at one connection count: idle memory, then fan-out and steady."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

from rich.progress import Progress

from clarion_bench.loadgen import LoadGen
from clarion_bench.noise import wait_quiet
from clarion_bench.proc import PER_WORKER, BenchError
from clarion_bench.scenarios.fanout import fanout
from clarion_bench.scenarios.steady import steady
from clarion_bench.targets import Clarion, Target


def run_level(
    target: Target,
    n: int,
    cfg: argparse.Namespace,
    node: str,
    note: Callable[[str], None],
    progress: Progress,
    task: Any,
) -> dict[str, Any]:
    out: dict[str, Any] = {"connections": n}
    out["other_cpu_before"] = wait_quiet(cfg.quiet_wait, note)
    note("starting server")
    target.start()
    lg = None
    try:
        time.sleep(cfg.settle)
        rss0 = target.rss()
        lg = LoadGen(node, max(1, math.ceil(n / PER_WORKER)), cfg.logdir)

        def on_progress(msg: dict[str, Any]) -> None:
            progress.update(
                task,
                description=f"{target.name} {n:,}: connecting "
                f"{msg['ok']:,}/{n:,}" + (f" ({msg['failed']} failed)" if msg["failed"] else ""),
            )

        tokens = target.tokens_file(n)
        t0 = time.monotonic()
        conn = lg.connect(target.ws_url(), target.protocol, n, tokens, on_progress)
        out["connect"] = {
            "ok": conn["ok"],
            "failed": conn["failed"],
            "errors": conn["errors"],
            "seconds": round(time.monotonic() - t0, 2),
        }
        if conn["ok"] == 0:
            raise BenchError(f"no connection succeeded: {conn['errors']}")
        note("idle memory")
        time.sleep(cfg.settle)
        rss1 = target.rss()
        out["memory"] = {
            "rss_idle_mb": round(rss0 / 2**20, 1),
            "rss_connected_mb": round(rss1 / 2**20, 1),
            "kb_per_conn": round((rss1 - rss0) / conn["ok"] / 1024, 2),
        }
        if "fanout" in cfg.scenarios and isinstance(target, Clarion):
            by: dict[str, Any] = {}
            for i, c in enumerate(cfg.publish_concurrency):
                target.set_concurrency(c)
                by[str(c)] = fanout(lg, target, n, cfg, 1000 + 100 * i, note)
            target.set_concurrency(cfg.publish_concurrency[0])
            out["fanout"] = by[str(cfg.publish_concurrency[0])]
            out["fanout_by_concurrency"] = by
        elif "fanout" in cfg.scenarios:
            out["fanout"] = fanout(lg, target, n, cfg, 100, note)
            if target.name == "raw":
                out["generator_ceiling"] = fanout(lg, target, n, cfg, 200, note, coalesce=True)
        if "steady" in cfg.scenarios and target.name != "raw":
            out["steady"] = steady(lg, target, n, cfg, 300, note)
        lg.send({"cmd": "status"})
        out["open_at_end"] = lg.wait("status", 30)["open"]
    finally:
        if lg:
            lg.close()
        target.stop()
    return out
