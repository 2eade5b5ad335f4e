"""Idle memory per connection: over WebSocket (in level.py) and over SSE and long-polling."""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from clarion_bench.loadgen import http_tool
from clarion_bench.noise import wait_quiet
from clarion_bench.proc import BenchError, stop_process
from clarion_bench.targets import Clarion


def transport_memory(
    target: Clarion,
    kind: str,
    n: int,
    cfg: argparse.Namespace,
    node: str,
    note: Callable[[str], None],
) -> dict[str, Any]:
    """Idle memory per connection over SSE or long-polling: (RSS with N idle clients - RSS with
    none) / N, as for WebSocket."""
    out: dict[str, Any] = {"connections": n}
    out["other_cpu_before"] = wait_quiet(cfg.quiet_wait, note)
    target.start()
    proc = None
    try:
        time.sleep(cfg.settle)
        rss0 = target.rss()
        note(f"{kind}: opening {n:,} connections")
        log = open(cfg.logdir / f"http-{kind}.log", "ab")  # noqa: SIM115
        proc = subprocess.Popen(
            http_tool(
                node,
                "hold",
                "--url",
                f"http://127.0.0.1:{target.port}",
                "--kind",
                kind,
                "--tokens",
                target.tokens_file(n),
                "--n",
                str(n),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
        log.close()
        box: list[str] = []
        reader = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        reader.join(60 + n / 100)
        if not box or not box[0].strip():
            raise BenchError(f"{kind}: no connection report from http.mjs")
        conn = json.loads(box[0])
        out["connect"] = {k: conn[k] for k in ("ok", "failed", "errors", "seconds")}
        if not conn["ok"]:
            raise BenchError(f"{kind}: no connection succeeded: {conn['errors']}")
        time.sleep(cfg.settle)
        rss1 = target.rss()
        out["memory"] = {
            "rss_idle_mb": round(rss0 / 2**20, 1),
            "rss_connected_mb": round(rss1 / 2**20, 1),
            "kb_per_conn": round((rss1 - rss0) / conn["ok"] / 1024, 2),
        }
    finally:
        if proc:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            stop_process(proc)
        target.stop()
    return out
