"""Control of the load generator (bench/loadgen, Node.js + ws) and of its HTTP client
(http.mjs), and whether the generator was what limited a result."""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from clarion_bench.proc import BENCH, NODE_DIR, BenchError, pin, stop_process

IDLE_MS = 10_000  # a burst is over when nothing arrived for this long (or all arrived)


class LoadGen:
    def __init__(self, node: str, workers: int, logdir: Path, core: int | None = 1) -> None:
        log = open(logdir / "loadgen.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [
                *(pin(core) if core is not None else []),
                node,
                str(BENCH / "loadgen" / "main.mjs"),
                "--workers",
                str(workers),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            bufsize=1,
            env={**os.environ, "BENCH_NODE_DIR": str(NODE_DIR)},
        )
        log.close()
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.wait("ready", 30)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.strip():
                self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, cmd: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def wait(
        self, ev: str, timeout: float, on_progress: Callable[[dict[str, Any]], None] | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"load generator: no '{ev}' within {timeout:.0f} s")
            try:
                msg = self.events.get(timeout=left)
            except queue.Empty:
                continue
            if msg is None:
                raise BenchError("load generator exited; see loadgen.log")
            if msg["ev"] == ev:
                return msg
            if msg["ev"] == "error":
                raise BenchError(f"load generator: {msg['message']}")
            if msg["ev"] == "progress" and on_progress:
                on_progress(msg)

    def connect(
        self,
        url: str,
        protocol: str,
        n: int,
        tokens: str | None,
        on_progress: Callable[[dict[str, Any]], None],
        local_addresses: list[str] | None = None,
    ) -> dict[str, Any]:
        self.start_connect(url, protocol, n, tokens, local_addresses)
        return self.wait("connected", 60 + n / 100, on_progress)

    def start_connect(
        self,
        url: str,
        protocol: str,
        n: int,
        tokens: str | None,
        local_addresses: list[str] | None = None,
        concurrency: int = 100,
        cursor: str | None = None,
    ) -> None:
        self.send(
            {
                "cmd": "connect",
                "url": url,
                "protocol": protocol,
                "n": n,
                "tokensFile": tokens,
                "concurrency": concurrency,
                "timeoutMs": 15000,
                "retries": 2,
                "localAddresses": local_addresses or [],
                "cursor": cursor,
            }
        )

    def close(self) -> None:
        try:
            self.send({"cmd": "close"})
            self.wait("closed", 15)
            self.proc.wait(5)
        except (BenchError, OSError, subprocess.TimeoutExpired):
            pass
        stop_process(self.proc)


def http_tool(node: str, *args: str) -> list[str]:
    return [*pin(1), node, str(BENCH / "loadgen" / "http.mjs"), *args]


SATURATED_CPU = 0.85  # a generator busy this share of its core(s) may be what limits a result
SATURATED_LOOP_MS = 10.0  # ... or whose event loop runs callbacks this late (p99)


def generator_load(msg: dict[str, Any], wall_ms: float, cores: float) -> dict[str, Any]:
    """The generator's CPU (in cores) and event-loop delay over a phase, and whether it was
    saturated: then the figure measured is (also) the generator's, and the report says so."""
    cpu = sum(msg.get("workerCpuMs", [])) / max(1.0, wall_ms)
    loop = msg.get("loopDelayMs", {})
    p99 = round(loop.get("p99", 0.0), 2)
    return {
        "cpu": round(cpu, 2),
        "loop_delay_p99_ms": p99,
        "loop_delay_max_ms": round(loop.get("max", 0.0), 2),
        "saturated": cpu > SATURATED_CPU * cores or p99 > SATURATED_LOOP_MS,
    }


def gen_load(res: dict[str, Any], wall_ms: float, publisher_cpu: float) -> dict[str, Any]:
    load = generator_load(res, wall_ms, 1)
    load["saturated"] = load["saturated"] or load["cpu"] + publisher_cpu > SATURATED_CPU
    return load


def source_addresses(k: int) -> list[str]:
    """Loopback source addresses, one per generator process: each address has its own
    ephemeral ports (32768-60999 here), so 40,000 connections do not exhaust them."""
    out = []
    for i in range(k):
        addr = f"127.0.0.{2 + i % 250}"
        with socket.socket() as s:
            try:
                s.bind((addr, 0))
            except OSError:
                return out or ["127.0.0.1"]
        out.append(addr)
    return out
