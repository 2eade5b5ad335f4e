#!/usr/bin/env python3
"""Clarion's benchmark: measures Clarion and its peers on this machine, in one run, and writes a
report (bench/results/<stamp>.json and .md).

    python bench/run.py              # everything (about 10-15 minutes)
    python bench/run.py --quick      # a smaller version, under 2 minutes
    python bench/run.py --peers clarion,node_socketio --conns 10000 --scenarios fanout

Each server runs alone, pinned to core 0; the load generator (bench/loadgen, Node.js + ws) runs
pinned to core 1. The driver installs what the peers and the generator need into bench/.work
(npm for Node, a venv for the Python peers). Clarion is the `clarion` next to this Python (or
--clarion PATH). Imports: stdlib, rich, httpx, psutil.

Scenarios, for each server and each connection count:
  memory  idle memory per WebSocket connection: (RSS with N idle connections - RSS with none) / N
  fanout  broadcast bursts to all N connections: deliveries/s from the first to the last receipt,
          and the latency of each delivery (receive time minus the send stamp `t`)
  steady  a fixed delivery rate (default 20,000/s) for a while: latency percentiles
Two reference servers bound what can be measured: `raw` writes pre-encoded frames to each socket
(one write per delivery, no framing work: the loopback ceiling of any server doing one write per
delivery), and its coalesced variant writes a whole burst per socket at once (what the generator
can receive at all: the generator ceiling). A result above 80% of the generator ceiling is
flagged generator-bound.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import math
import os
import platform
import queue
import resource
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

BENCH = Path(__file__).resolve().parent
WORK = BENCH / ".work"
NODE_DIR = WORK / "node"
VENV = WORK / "venv"
RESULTS = BENCH / "results"
PER_WORKER = 5000  # connections per generator process
PEERS = ["raw", "node_ws", "node_socketio", "py_websockets", "py_socketio", "clarion"]
LABELS = {
    "raw": "raw frames (loopback ceiling)",
    "node_ws": "Node ws",
    "node_socketio": "Node Socket.IO",
    "py_websockets": "Python websockets (uvloop)",
    "py_socketio": "python-socketio (uvicorn)",
    "clarion": "Clarion",
}
GENERATOR_BOUND = 0.8
IDLE_MS = 10_000  # a burst is over when nothing arrived for this long (or all arrived)
NOISY = 0.15  # cores used by other processes during a measurement that make it suspect
console = Console(stderr=True)


class BenchError(RuntimeError):
    pass


def now_ms() -> float:
    return time.time() * 1000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pin(core: int) -> list[str]:
    """taskset prefix for a child process, when there are two cores to split."""
    if (os.cpu_count() or 1) >= 2 and shutil.which("taskset"):
        return ["taskset", "-c", str(core)]
    return []


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


def stop_process(proc: subprocess.Popen[Any] | None) -> None:
    """Ends a process we started, and the processes it started, by pid."""
    if proc is None or proc.poll() is not None:
        return
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        kids = []
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    for kid in kids:
        with contextlib.suppress(psutil.Error):
            kid.kill()


# ---------------------------------------------------------------------------------------------
# Setup: the bench installs its own Node and Python dependencies under bench/.work.


def digest(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()


def ensure_node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        raise BenchError("the benchmark needs node (>= 18) and npm on PATH")
    manifest, lock = BENCH / "loadgen" / "package.json", BENCH / "loadgen" / "package-lock.json"
    stamp = NODE_DIR / ".stamp"
    want = digest(manifest, lock)
    if not (stamp.exists() and stamp.read_text() == want):
        NODE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(manifest, NODE_DIR / "package.json")
        shutil.copy(lock, NODE_DIR / "package-lock.json")
        with console.status("installing Node dependencies (npm ci) into bench/.work/node"):
            run_checked([npm, "ci", "--prefix", str(NODE_DIR), "--no-audit", "--no-fund"], 600)
        stamp.write_text(want)
    return node


def ensure_venv() -> Path:
    reqs = BENCH / "peers" / "requirements.txt"
    python = VENV / "bin" / "python"
    stamp = VENV / ".stamp"
    want = digest(reqs)
    if not (stamp.exists() and stamp.read_text() == want and python.exists()):
        with console.status("installing the Python peers into bench/.work/venv"):
            run_checked([sys.executable, "-m", "venv", "--clear", str(VENV)], 300)
            run_checked([str(python), "-m", "pip", "install", "-q", "-r", str(reqs)], 600)
        stamp.write_text(want)
    return python


def run_checked(argv: list[str], timeout: float) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if out.returncode:
        raise BenchError(f"{' '.join(argv)} failed:\n{out.stdout}\n{out.stderr}")
    return out.stdout


# ---------------------------------------------------------------------------------------------
# Servers under test.


class Target:
    """A server under test: started fresh for each connection count, pinned to core 0."""

    name = ""
    protocol = "plain"
    core: int | None = 0  # pinned to this core; None: free to use every core

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.proc: subprocess.Popen[Any] | None = None
        self.port = 0
        self.http = httpx.Client(timeout=120)

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready_url(self) -> str:
        raise NotImplementedError

    def ws_url(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        self.port = free_port()
        argv, env = self.command()
        log = open(self.logdir / f"{self.name}.log", "ab")  # noqa: SIM115 (owned by the child)
        self.proc = subprocess.Popen(
            (pin(self.core) if self.core is not None else []) + argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", **env},
        )
        log.close()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited with {self.proc.returncode}; see its log")
            try:
                if self.http.get(self.ready_url(), timeout=2).status_code == 200:
                    self.after_start()
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not become ready in 60 s")

    def after_start(self) -> None:
        pass

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def _procs(self) -> list[psutil.Process]:
        assert self.proc is not None
        main = psutil.Process(self.proc.pid)
        return [main, *main.children(recursive=True)]

    def rss(self) -> int:
        return sum(p.memory_info().rss for p in self._procs())

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self._procs():
            t = p.cpu_times()
            total += t.user + t.system
        return total

    def tokens_file(self, n: int) -> str | None:
        return None

    def publish(
        self, count: int, size: int, burst: int, t: float | None = None, coalesce: bool = False
    ) -> None:
        raise NotImplementedError


class Peer(Target):
    """One of the reference servers in bench/peers, controlled by POST /broadcast."""

    def __init__(self, name: str, logdir: Path, node: str, python: Path) -> None:
        super().__init__(logdir)
        self.name = name
        self.node = node
        self.python = python
        self.control_port = 0
        self.protocol = "socketio" if name in ("node_socketio", "py_socketio") else "plain"

    def command(self) -> tuple[list[str], dict[str, str]]:
        peers = BENCH / "peers"
        port = str(self.port)
        self.control_port = self.port
        env = {"BENCH_NODE_DIR": str(NODE_DIR)}
        if self.name == "raw":
            return [self.node, str(peers / "node_ws.mjs"), "--port", port, "--raw"], env
        if self.name in ("node_ws", "node_socketio"):
            return [self.node, str(peers / f"{self.name}.mjs"), "--port", port], env
        if self.name == "py_websockets":
            self.control_port = free_port()
            return [
                str(self.python),
                str(peers / "py_websockets.py"),
                "--port",
                port,
                "--control-port",
                str(self.control_port),
            ], env
        return [str(self.python), str(peers / "py_socketio.py"), "--port", port], env

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}/stats"

    def ws_url(self) -> str:
        if self.protocol == "socketio":
            return f"ws://127.0.0.1:{self.port}/socket.io/?EIO=4&transport=websocket"
        return f"ws://127.0.0.1:{self.port}/"

    def publish(
        self, count: int, size: int, burst: int, t: float | None = None, coalesce: bool = False
    ) -> None:
        spec: dict[str, Any] = {"count": count, "size": size, "burst": burst, "coalesce": coalesce}
        if t is not None:
            spec["t"] = t
        r = self.http.post(f"http://127.0.0.1:{self.control_port}/broadcast", json=spec)
        r.raise_for_status()


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def mint_hs256(secret: str, sub: str, ttl: int = 3600) -> str:
    """A user JWT, as an application would mint it (no PyJWT needed in the driver)."""
    now = int(time.time())
    head = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
    body = b64url(
        json.dumps({"sub": sub, "iat": now, "exp": now + ttl}, separators=(",", ":")).encode()
    )
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64url(sig)}"


class Clarion(Target):
    """Clarion itself: `clarion serve` on a fresh SQLite database, publishing to `all`."""

    name = "clarion"
    protocol = "clarion"

    def __init__(
        self, logdir: Path, binary: Path, concurrency: int, database_url: str | None = None
    ) -> None:
        super().__init__(logdir)
        self.binary = binary
        self.secret = secrets.token_urlsafe(32)
        self.tmp = Path(tempfile.mkdtemp(prefix="clarion-bench-"))
        self.database_url = database_url or f"sqlite:///{self.tmp / 'bench.db'}"
        self.api_key = ""
        self.extra_env: dict[str, str] = {}  # e.g. CLARION_GC_TUNING=0 for a comparison
        self.set_concurrency(concurrency)

    def set_concurrency(self, concurrency: int) -> None:
        """POST /v1/notifications in flight during a burst (1: wait for each 201)."""
        self.concurrency = concurrency
        self.pool = ThreadPoolExecutor(max_workers=max(1, concurrency))

    def env(self) -> dict[str, str]:
        return {
            "CLARION_DATABASE_URL": self.database_url,
            "CLARION_JWT_SECRET": self.secret,
            "CLARION_LOG_LEVEL": "warning",
            # The generator opens thousands of connections from one address in seconds.
            "CLARION_RATE_LIMIT_IP": "10000000/second",
            "CLARION_RATE_LIMIT_USER": "10000000/second",
            "CLARION_RATE_LIMIT_PUBLISH": "10000000/second",
            **self.extra_env,
        }

    def command(self) -> tuple[list[str], dict[str, str]]:
        db = self.tmp / "bench.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        return [
            str(self.binary),
            "serve",
            "--port",
            str(self.port),
            "--database-url",
            self.database_url,
        ], self.env()

    def ready_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/ws"

    def after_start(self) -> None:
        out = subprocess.run(
            [str(self.binary), "keys", "create", "--scope", "publish", "--name", "bench"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, **self.env()},
        )
        for line in out.stdout.splitlines():
            word = line.strip().split()[0] if line.strip() else ""
            if word.startswith("clk_"):
                self.api_key = word
                return
        raise BenchError(f"`clarion keys create` printed no clk_ secret:\n{out.stdout}{out.stderr}")

    def tokens_file(self, n: int) -> str:
        path = self.tmp / f"tokens-{n}.txt"
        if not path.exists():
            path.write_text("\n".join(mint_hs256(self.secret, f"bench-{i}") for i in range(n)))
        return str(path)

    audience: dict[str, Any] = {"all": True}  # bench/topics.py publishes to a topic

    def _post(self, size: int, burst: int, seq: int, t: float | None) -> None:
        body = {
            **self.audience,
            "type": "bench",
            "title": "x",
            "body": "",
            "data": {"t": t if t is not None else now_ms(), "b": burst, "seq": seq},
        }
        pad = size - len(json.dumps(body, separators=(",", ":")))
        body["body"] = "x" * max(0, pad)
        r = self.http.post(
            f"http://127.0.0.1:{self.port}/v1/notifications",
            json=body,
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        if r.status_code != 201:
            raise BenchError(f"POST /v1/notifications answered {r.status_code}: {r.text[:300]}")

    def publish(
        self, count: int, size: int, burst: int, t: float | None = None, coalesce: bool = False
    ) -> None:
        if self.concurrency <= 1:
            for seq in range(1, count + 1):
                self._post(size, burst, seq, t)
            return
        futures = [self.pool.submit(self._post, size, burst, seq, t) for seq in range(1, count + 1)]
        for f in futures:
            f.result()


# ---------------------------------------------------------------------------------------------
# The load generator (bench/loadgen/main.mjs), spoken to in JSON lines.


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


# ---------------------------------------------------------------------------------------------
# Scenarios.


def net_counters() -> dict[str, int]:
    """Loopback trouble signs (Linux): packets dropped by a full per-CPU backlog, and TCP
    retransmissions and timeouts, which stall a burst for 200 ms or more."""
    out = {"softnet_drops": 0, "retrans": 0, "timeouts": 0}
    try:
        for line in Path("/proc/net/softnet_stat").read_text().splitlines():
            out["softnet_drops"] += int(line.split()[1], 16)
        snmp = Path("/proc/net/snmp").read_text().splitlines()
        tcp = [line.split()[1:] for line in snmp if line.startswith("Tcp:")]
        out["retrans"] = int(dict(zip(tcp[0], tcp[1], strict=True))["RetransSegs"])
        ext = Path("/proc/net/netstat").read_text().splitlines()
        tcpext = [line.split()[1:] for line in ext if line.startswith("TcpExt:")]
        out["timeouts"] = int(dict(zip(tcpext[0], tcpext[1], strict=True))["TCPTimeouts"])
    except (OSError, KeyError, IndexError, ValueError):
        pass
    return out


class Sample:
    """What the machine did between two instants: CPU spent by everyone (in cores), by our own
    processes, and the loopback trouble counters. Other sessions' work on a shared machine
    shows up as `other_cpu`, and makes a result suspect."""

    def __init__(self, target: Target, lg: LoadGen) -> None:
        self.target, self.lg = target, lg
        self.t = time.monotonic()
        self.busy = self._busy()
        self.ours = self._ours()
        self.irq, self.steal = self._kernel()
        self.net = net_counters()

    @staticmethod
    def _busy() -> float:
        # Interrupt time is left out: with IRQ time accounting, the loopback's softirq work is
        # counted there and not in any process, though it is ours.
        c = psutil.cpu_times()
        return c.user + c.nice + c.system

    @staticmethod
    def _kernel() -> tuple[float, float]:
        c = psutil.cpu_times()
        return c.irq + c.softirq, getattr(c, "steal", 0.0)

    def _ours(self) -> float:
        total = self.target.cpu_seconds()
        procs = [psutil.Process(), psutil.Process(self.lg.proc.pid)]
        with contextlib.suppress(psutil.Error):
            procs += procs[1].children(recursive=True)
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def since(self, before: Sample) -> dict[str, float]:
        wall = max(1e-3, self.t - before.t)
        net = {k: self.net[k] - before.net[k] for k in self.net}
        other = (self.busy - before.busy) - (self.ours - before.ours)
        return {
            "other_cpu": round(max(0.0, other) / wall, 2),
            "irq_cpu": round((self.irq - before.irq) / wall, 2),
            "steal_cpu": round((self.steal - before.steal) / wall, 2),
            **net,
        }


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
        "generator_cpu": round(sum(res["workerCpuMs"]) / res["spanMs"], 2) if span_s else None,
        "lost_connections": res["closed"],
        "bad": res["bad"],
        "stale": res["stale"],
        **machine_use,
    }


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
        "generator_cpu": median["generator_cpu"],
        "other_cpu": max(r["other_cpu"] for r in chosen),
        "stalls": sum(r["timeouts"] + r["softnet_drops"] for r in chosen),
        "complete": all(r["received"] == r["expected"] for r in chosen),
        "runs": runs,
    }


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


def wait_quiet(seconds: float, note: Callable[[str], None]) -> float:
    """Waits (at most `seconds`) until other processes use less than NOISY of a core, so that a
    shared machine's other work does not land in a measurement. Returns the load last seen."""
    me = psutil.Process()
    deadline = time.monotonic() + seconds
    while True:
        c0, m0, t0 = Sample._busy(), sum(me.cpu_times()[:2]), time.monotonic()
        time.sleep(0.5)
        other = (Sample._busy() - c0 - (sum(me.cpu_times()[:2]) - m0)) / (time.monotonic() - t0)
        if other < NOISY or time.monotonic() > deadline:
            return round(other, 2)
        note(f"waiting for the machine to be quiet ({other:.2f} cores busy elsewhere)")


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


# ---------------------------------------------------------------------------------------------
# Clarion-only scenarios, each on a fresh server: durable personal notifications, and idle
# memory of the SSE and long-polling transports. The HTTP client is bench/loadgen/http.mjs.


def http_tool(node: str, *args: str) -> list[str]:
    return [*pin(1), node, str(BENCH / "loadgen" / "http.mjs"), *args]


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


# ---------------------------------------------------------------------------------------------
# Clarion at scale (each on fresh servers): how many connections the processes and the machine
# hold (`capacity`), and publish-to-socket latency of personal notifications with many users
# connected (`latency`).

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


# ---------------------------------------------------------------------------------------------
# Connect storms: handshakes per second, Clarion against Node `ws` and Socket.IO.

CONNECT_PEERS = ("clarion", "node_ws", "node_socketio")
CONNECT_IN_FLIGHT = 100
REPLAY_EVENTS = 100


def _storm(
    target: Target,
    lg: LoadGen,
    n: int,
    addrs: list[str],
    note: Callable[[str], None],
    cursor: str | None = None,
) -> dict[str, Any]:
    """Open `n` connections, CONNECT_IN_FLIGHT handshakes at a time; the server's CPU per
    handshake comes from its CPU time over the storm."""
    cpu0, t0 = target.cpu_seconds(), time.monotonic()
    workers = max(1, math.ceil(n / PER_WORKER))
    per_worker = max(1, CONNECT_IN_FLIGHT // workers)  # the generator's lanes are per process
    tokens = target.tokens_file(n)
    lg.start_connect(target.ws_url(), target.protocol, n, tokens, addrs, per_worker, cursor)

    def on_progress(msg: dict[str, Any]) -> None:
        failed = f" ({msg['failed']} failed)" if msg["failed"] else ""
        note(f"{msg['ok']:,}/{n:,} connected{failed}")

    res = lg.wait("connected", 120 + n / 50, on_progress)
    wall = time.monotonic() - t0
    cpu = target.cpu_seconds() - cpu0
    hs = res.get("handshakeMs", {})
    return {
        "ok": res["ok"],
        "failed": res["failed"],
        "errors": res["errors"],
        "seconds": round(wall, 2),
        "per_second": round(res["ok"] / wall) if wall > 0 else None,
        "p50_ms": round(hs["p50"], 2) if hs.get("p50") is not None else None,
        "p99_ms": round(hs["p99"], 2) if hs.get("p99") is not None else None,
        "max_ms": round(hs.get("max") or 0, 1),
        "server_cpu_ms_per_handshake": round(1000 * cpu / max(1, res["ok"]), 3),
        "replayed": res.get("replayed", 0),
        "generator": generator_load(res, wall * 1000, 1),
    }


def connect_scenario(
    target: Target, n: int, cfg: argparse.Namespace, node: str, note: Callable[[str], None]
) -> dict[str, Any]:
    """A storm of `n` new connections on a fresh server (Clarion: each a distinct user with a
    JWT, an empty replay, until `welcome`). For Clarion at the smallest level, then:
    REPLAY_EVENTS notifications to `all` and `cfg.replay_conns` reconnects whose cursor is from
    before them, each replayed the 100 events before its `unread` (where its handshake ends)."""
    out: dict[str, Any] = {"other_cpu_before": wait_quiet(cfg.quiet_wait, note)}
    note("starting server")
    target.start()
    lg: LoadGen | None = None
    try:
        time.sleep(cfg.settle)
        k = max(1, math.ceil(n / PER_WORKER))
        addrs = source_addresses(k)
        lg = LoadGen(node, k, cfg.logdir)
        out["storm"] = _storm(target, lg, n, addrs, note)
        if isinstance(target, Clarion) and cfg.replay_conns and n == min(cfg.connect_conns):
            lg.close()
            lg = None
            note(f"publishing {REPLAY_EVENTS} notifications to all")
            target.publish(REPLAY_EVENTS, cfg.size, 950)
            m = min(n, cfg.replay_conns)
            lg = LoadGen(node, 1, cfg.logdir)
            cursor = b64url(json.dumps({"all": 0}, separators=(",", ":")).encode())
            replay = _storm(target, lg, m, addrs[:1], note, cursor)
            replay["events_each"] = round(replay["replayed"] / max(1, replay["ok"]), 1)
            out["replay"] = replay
    finally:
        if lg:
            lg.close()
        target.stop()
    return out


def run_connect(
    targets: list[Target],
    cfg: argparse.Namespace,
    node: str,
    report: dict[str, Any],
    progress: Progress,
    step: Any,
) -> None:
    """Every level, each server in turn (so the servers of one level see the same machine)."""
    out: dict[str, dict[str, Any]] = {}
    report["connect"] = out
    for n in cfg.connect_conns:
        for target in [t for t in targets if t.name in CONNECT_PEERS]:

            def note(text: str, name: str = target.name, n: int = n) -> None:
                progress.update(step, description=f"connect {name} {n:,}: {text}")

            try:
                level = connect_scenario(target, n, cfg, node, note)
                out.setdefault(target.name, {})[str(n)] = level
                s = level["storm"]
                progress.console.print(
                    f"connect {LABELS.get(target.name, target.name)} at {n:,}: "
                    f"{fmt_rate(s['per_second'])} handshakes/s, p99 {s['p99_ms']} ms"
                )
            except (BenchError, httpx.HTTPError, OSError) as exc:
                report["errors"][f"connect:{target.name}@{n}"] = str(exc)
                progress.console.print(f"[red]connect {target.name} at {n:,}: {exc}")


def connect_markdown(report: dict[str, Any]) -> list[str]:
    res: dict[str, dict[str, Any]] = report.get("connect") or {}
    if not res:
        return []
    levels = sorted({int(n) for r in res.values() for n in r})
    lines = [
        "## Connect storms",
        "",
        f"New WebSocket connections, {CONNECT_IN_FLIGHT} handshakes in flight, server on core 0, "
        "generator on core 1, a fresh server per row. A handshake ends when the connection is "
        "usable: Clarion at `welcome` (first-frame JWT auth, follows, snapshot, an empty "
        "replay), Socket.IO at its `40` connect answer, `ws` at the upgrade. Server CPU is its "
        "CPU time over the storm per handshake.",
        "",
        "| server | connections | handshakes/s | p50 ms | p99 ms | server CPU ms/handshake "
        "| failed | Clarion's rate over it |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in levels:
        mine = res.get("clarion", {}).get(str(n), {}).get("storm", {}).get("per_second")
        for name in CONNECT_PEERS:
            s = res.get(name, {}).get(str(n), {}).get("storm")
            if not s:
                continue
            flag = " (generator saturated)" if s["generator"]["saturated"] else ""
            lines.append(
                f"| {LABELS.get(name, name)} | {n:,} | {fmt_rate(s['per_second'])}{flag} | "
                f"{s['p50_ms']} | {s['p99_ms']} | {s['server_cpu_ms_per_handshake']} | "
                f"{s['failed']} | {ratio(mine, s['per_second']) if name != 'clarion' else ''} |"
            )
    replays = [(n, r["replay"]) for n, r in res.get("clarion", {}).items() if "replay" in r]
    if replays:
        lines += [
            "",
            f"Clarion reconnects with a cursor that needs a replay of {REPLAY_EVENTS} events (to "
            "`unread`, which follows the replay):",
            "",
            "| after the storm of | reconnects | handshakes/s | p50 ms | p99 ms "
            "| server CPU ms/handshake | events replayed each | failed |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for n, r in replays:
            lines.append(
                f"| {int(n):,} | {r['ok']:,} | {fmt_rate(r['per_second'])} | {r['p50_ms']} | "
                f"{r['p99_ms']} | {r['server_cpu_ms_per_handshake']} | {r['events_each']} | "
                f"{r['failed']} |"
            )
    return [*lines, ""]


def connect_checks(report: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    res = report.get("connect") or {}
    checks = []
    for n, level in res.get("clarion", {}).items():
        mine = level["storm"]["per_second"]
        sio = res.get("node_socketio", {}).get(n, {}).get("storm", {}).get("per_second")
        checks.append(
            (
                f"connect storm of {int(n):,}: handshakes/s >= Node Socket.IO in the same run",
                f"{fmt_rate(mine)} vs {fmt_rate(sio)}",
                bool(mine and sio and mine >= sio),
            )
        )
    return checks


def psql(base: str, sql: str) -> None:
    run_checked(["psql", f"{base}/postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql], 60)


# ---------------------------------------------------------------------------------------------
# Report.


def fmt_rate(r: float | None) -> str:
    return f"{r:,.0f}" if r else "-"


def ratio(a: float | None, b: float | None, lower_is_better: bool = False) -> str:
    if not a or not b:
        return "-"
    return f"{(b / a if lower_is_better else a / b):.2f}x"


def markdown(report: dict[str, Any]) -> str:
    res: dict[str, dict[str, Any]] = report["results"]
    conns = report["config"]["conns"]
    base = report["baseline"]
    ceil = report["ceilings"]
    lines = [
        f"# Clarion benchmark, {report['started']}",
        "",
        f"Machine: {report['machine']['cpu']}, {report['machine']['cpus']} cores, "
        f"Linux {report['machine']['kernel']}, Python {report['machine']['python']}, "
        f"Node {report['machine']['node']}. Server pinned to core 0, load generator to core 1. "
        f"Payload ~{report['config']['size']} bytes. Mode: {report['config']['mode']}.",
        "",
    ]
    bname = LABELS.get(base, base)
    if base in res:
        lines += [
            f"\"{bname} advantage\" is {bname}'s figure over the server's for rates, and the "
            f"server's over {bname}'s for memory: above 1.00x, {bname} does better.",
            "",
        ]
    if any("fanout" in lv for r in res.values() for lv in r.values()):
        lines += ["## Broadcast fan-out (deliveries/s, median burst)", ""]
        head = ["server"]
        for n in conns:
            head += [f"{n:,} conns", f"p50 / p99 / p99.9 ms at {n:,}"]
            if base in res:
                head.append(f"{bname} advantage at {n:,}")
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for peer, levels in res.items():
            row = [LABELS.get(peer, peer)]
            for n in conns:
                f = levels.get(str(n), {}).get("fanout")
                if not f:
                    row += ["-", "-"] + (["-"] if base in res else [])
                    continue
                flag = ""
                gc = ceil.get(str(n), {}).get("generator")
                if gc and f["rate"] and f["rate"] > GENERATOR_BOUND * gc and peer != "raw":
                    flag = " (generator-bound)"
                if not f["complete"]:
                    flag += " (incomplete)"
                if f.get("other_cpu", 0) > NOISY:
                    flag += f" (noisy: {f['other_cpu']} cores busy elsewhere)"
                if f.get("stalls"):
                    flag += " (TCP timeouts or drops)"
                lat = f["latency_ms"]
                row += [fmt_rate(f["rate"]) + flag, f"{lat['p50']} / {lat['p99']} / {lat['p999']}"]
                if base in res:
                    b = res[base].get(str(n), {}).get("fanout", {})
                    row.append(ratio(b.get("rate"), f["rate"]))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
        if ceil:
            lines.append(
                "Ceilings: "
                + "; ".join(
                    f"{int(n):,} conns: generator {fmt_rate(c.get('generator'))}/s, "
                    f"loopback (one write per delivery) {fmt_rate(c.get('loopback'))}/s"
                    for n, c in ceil.items()
                )
                + "."
            )
            lines.append("")
    lines += (
        []
        if not res
        else [
            "## Idle memory per WebSocket connection",
            "",
            f"| server | KB per connection (at {conns[-1]:,}) | RSS idle / connected (MB) |"
            + (f" {bname} advantage |" if base in res else ""),
            "|---|---|---|" + ("---|" if base in res else ""),
        ]
    )
    for peer, levels in res.items():
        m = levels.get(str(conns[-1]), {}).get("memory")
        if not m or peer == "raw":
            continue
        row = [
            LABELS.get(peer, peer),
            f"{m['kb_per_conn']:.1f}",
            f"{m['rss_idle_mb']} / {m['rss_connected_mb']}",
        ]
        if base in res:
            b = res[base].get(str(conns[-1]), {}).get("memory", {})
            row.append(ratio(b.get("kb_per_conn"), m["kb_per_conn"], lower_is_better=True))
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    if any("steady" in lv for r in res.values() for lv in r.values()):
        rate = report["config"]["rate"]
        lines += [
            f"## Steady delivery at {rate:,}/s (latency ms)",
            "",
            "| server | conns | achieved/s | p50 | p99 | p99.9 | max |",
            "|---|---|---|---|---|---|---|",
        ]
        for peer, levels in res.items():
            for n in conns:
                s = levels.get(str(n), {}).get("steady")
                if s:
                    lat = s["latency_ms"]
                    flag = f" (noisy: {s['other_cpu']})" if s.get("other_cpu", 0) > NOISY else ""
                    lines.append(
                        f"| {LABELS.get(peer, peer)} | {n:,} | {fmt_rate(s['rate'])}{flag} | "
                        f"{lat['p50']} | {lat['p99']} | {lat['p999']} | {lat['max']} |"
                    )
        lines.append("")
    lines += connect_markdown(report)
    if "clarion" in res:
        lines += extra_markdown(report)
        lines += ["## Targets", ""]
        big = str(max(conns))
        c = res["clarion"].get(big, {})
        sio = res.get("node_socketio", {}).get(big, {}).get("fanout", {}).get("rate")
        rate = c.get("fanout", {}).get("rate")
        kb = c.get("memory", {}).get("kb_per_conn")
        checks = [
            (
                f"fan-out >= 120,000 deliveries/s to {int(big):,} connections",
                rate,
                bool(rate and rate >= 120_000),
            ),
            (
                "fan-out >= Node Socket.IO in the same run",
                f"{fmt_rate(rate)} vs {fmt_rate(sio)}",
                bool(rate and sio and rate >= sio),
            ),
            ("idle connection <= 16 KB (aim 8 KB)", kb, bool(kb is not None and kb <= 16)),
        ]
        for n in conns:
            st = res["clarion"].get(str(n), {}).get("steady")
            if st:
                p99 = st["latency_ms"]["p99"]
                checks.append(
                    (
                        f"steady {report['config']['rate']:,}/s at {n:,} connections: p99 <= 50 ms",
                        f"p99 {p99} ms at {fmt_rate(st['rate'])}/s",
                        bool(p99 is not None and p99 <= 50 and st["received"] == st["expected"]),
                    )
                )
        durable = report.get("clarion_extra", {}).get("durable_sqlite", {})
        for label, how in (("single", "1 per request"), ("many", "batch API, 100 per request")):
            d = durable.get(label)
            if d:
                checks.append(
                    (
                        f">= 5,000 durable personal notifications/s on SQLite ({how})",
                        f"{fmt_rate(d['notifications_per_s'])}/s",
                        d["notifications_per_s"] >= 5000,
                    )
                )
        checks += scale_checks(report) + connect_checks(report)
        lines += ["| target | measured | met |", "|---|---|---|"]
        for what, value, ok in checks:
            v = fmt_rate(value) if isinstance(value, (int, float)) and value > 100 else value
            lines.append(f"| {what} | {v} | {'yes' if ok else 'no'} |")
        lines.append("")
    return "\n".join(lines)


def run_extras(
    clarion: Clarion,
    cfg: argparse.Namespace,
    node: str,
    report: dict[str, Any],
    progress: Progress,
    step: Any,
) -> None:
    """Clarion-only scenarios, each on a fresh server."""
    extra: dict[str, Any] = {}
    report["clarion_extra"] = extra

    def note(text: str) -> None:
        progress.update(step, description=f"clarion: {text}")

    def attempt(key: str, fn: Callable[[], dict[str, Any]]) -> None:
        try:
            extra[key] = fn()
            progress.console.print(f"Clarion {key}: done")
        except (BenchError, httpx.HTTPError, OSError, subprocess.TimeoutExpired) as exc:
            report["errors"][f"clarion@{key}"] = str(exc)
            progress.console.print(f"[red]clarion {key}: {exc}")

    if "durable" in cfg.scenarios:
        attempt("durable_sqlite", lambda: durable(clarion, cfg, node, note))
        if cfg.postgres:
            base = cfg.postgres.rstrip("/")
            db = f"bench_{secrets.token_hex(4)}"
            pg = Clarion(cfg.logdir, clarion.binary, 1, f"{base}/{db}")
            try:
                psql(base, f"CREATE DATABASE {db}")
                attempt("durable_postgres", lambda: durable(pg, cfg, node, note))
            finally:
                with contextlib.suppress(BenchError, OSError, subprocess.TimeoutExpired):
                    psql(base, f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    if "latency" in cfg.scenarios:
        attempt("latency", lambda: personal_latency(clarion.binary, cfg, node, note))
    if "gc" in cfg.scenarios:  # the same with Python's default garbage collector settings
        attempt(
            "latency_gc_default",
            lambda: personal_latency(
                clarion.binary, cfg, node, note, env={"CLARION_GC_TUNING": "0"}
            ),
        )
    if "capacity" in cfg.scenarios:
        attempt("capacity", lambda: capacity(clarion.binary, cfg, node, note))
    if "transports" in cfg.scenarios:
        # Per-connection memory is flat from a few thousand on; 5,000 keeps the long-polling
        # run (each poll a full HTTP request) from taking minutes of the bench's 15.
        n = min(max(cfg.conns), 5000)
        for kind in ("sse", "poll"):
            attempt(
                f"memory_{kind}",
                lambda kind=kind: transport_memory(clarion, kind, n, cfg, node, note),
            )


def plots(json_path: Path, folder: Path, python: Path) -> list[str]:
    """PNG plots made by bench/plots.py with matplotlib, installed into bench/.work/venv (never a
    dependency of the project)."""
    probe = subprocess.run([str(python), "-c", "import matplotlib"], capture_output=True)
    if probe.returncode:
        with console.status("installing matplotlib into bench/.work/venv"):
            run_checked([str(python), "-m", "pip", "install", "-q", "matplotlib==3.9.2"], 600)
    folder.mkdir(parents=True, exist_ok=True)
    out = run_checked([str(python), str(BENCH / "plots.py"), str(json_path), str(folder)], 120)
    return out.split()


def extra_markdown(report: dict[str, Any]) -> list[str]:
    """Clarion against each peer, by publish concurrency, durable and transport sections."""
    res = report["results"]
    conns = report["config"]["conns"]
    lines: list[str] = []
    c = res["clarion"]
    others = [p for p in res if p not in ("clarion", "raw")]
    if others:
        lines += [
            "## Clarion against each peer (same run)",
            "",
            "Clarion's figure over the peer's for fan-out (above 1.00x Clarion is faster), the "
            "peer's over Clarion's for memory (above 1.00x Clarion uses less).",
            "",
        ]
        head = ["peer"] + [f"fan-out at {n:,}" for n in conns] + [f"memory at {conns[-1]:,}"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for p in others:
            row = [LABELS.get(p, p)]
            for n in conns:
                a = c.get(str(n), {}).get("fanout", {}).get("rate")
                b = res[p].get(str(n), {}).get("fanout", {}).get("rate")
                row.append(ratio(a, b))
            a = c.get(str(conns[-1]), {}).get("memory", {}).get("kb_per_conn")
            b = res[p].get(str(conns[-1]), {}).get("memory", {}).get("kb_per_conn")
            row.append(ratio(a, b, lower_is_better=True))
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if any("fanout_by_concurrency" in lv for lv in c.values()):
        lines += [
            "## Clarion fan-out by publishes in flight",
            "",
            "| publishes in flight | "
            + " | ".join(f"{n:,} conns (p50 / p99 ms)" for n in conns)
            + " |",
            "|---|" + "---|" * len(conns),
        ]
        for k in report["config"]["publish_concurrency"]:
            row = [f"{k}" + (" (waits for each 201)" if k == 1 else "")]
            for n in conns:
                f = c.get(str(n), {}).get("fanout_by_concurrency", {}).get(str(k))
                if not f:
                    row.append("-")
                    continue
                flag = " (noisy)" if f.get("other_cpu", 0) > NOISY else ""
                flag += "" if f["complete"] else " (incomplete)"
                lat = f["latency_ms"]
                row.append(f"{fmt_rate(f['rate'])}{flag} ({lat['p50']} / {lat['p99']})")
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    extra = report.get("clarion_extra", {})
    durs = [(k.split("_", 1)[1], v) for k, v in extra.items() if k.startswith("durable_")]
    if durs:
        lines += [
            "## Durable personal notifications (POST /v1/notifications with `users`)",
            "",
            f"{report['config']['durable_concurrency']} requests in flight, "
            f"{report['config']['durable_seconds']:.0f} s each, from bench/loadgen/http.mjs on "
            "core 1.",
            "",
            "| database | per request | notifications/s | recipients/s | "
            "p50 / p99 ms | server CPU | client CPU | non-2xx |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for db, d in durs:
            for label in ("single", "batch", "many"):
                r = d.get(label)
                if not r:
                    continue
                bad = sum(v for k, v in r["statuses"].items() if k not in ("200", "201"))
                flag = " (noisy)" if r.get("other_cpu", 0) > NOISY else ""
                shape = (
                    f"{r['many']} notifications (batch API)"
                    if r.get("many")
                    else f"1 notification, {r['batch']} user(s)"
                )
                lines.append(
                    f"| {db} | {shape} | {fmt_rate(r['notifications_per_s'])}{flag} | "
                    f"{fmt_rate(r['recipients_per_s'])} | {r['latency_ms']['p50']} / "
                    f"{r['latency_ms']['p99']} | {r['server_cpu']} | {r['client_cpu']} | {bad} |"
                )
        lines.append("")
    mems = [(k.split("_", 1)[1], v) for k, v in extra.items() if k.startswith("memory_")]
    if mems:
        ws = c.get(str(conns[-1]), {}).get("memory")
        lines += [
            "## Clarion idle memory per connection by transport",
            "",
            "| transport | connections | KB per connection | RSS idle / connected (MB) |",
            "|---|---|---|---|",
        ]
        if ws:
            lines.append(
                f"| WebSocket | {conns[-1]:,} | {ws['kb_per_conn']:.1f} | "
                f"{ws['rss_idle_mb']} / {ws['rss_connected_mb']} |"
            )
        for kind, m in mems:
            mm = m["memory"]
            lines.append(
                f"| {'SSE' if kind == 'sse' else 'long-polling'} | {m['connect']['ok']:,} | "
                f"{mm['kb_per_conn']:.1f} | {mm['rss_idle_mb']} / {mm['rss_connected_mb']} |"
            )
        lines.append("")
    return lines + scale_markdown(report)


def add_scale_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--capacity",
        type=int,
        default=None,
        help="connections held at once over several Clarion processes (40000; --quick: 4000)",
    )
    ap.add_argument(
        "--capacity-per-process",
        type=int,
        default=None,
        help="most connections one process is given (open-file limit - 500; --quick: 2000)",
    )
    ap.add_argument("--capacity-hold", type=float, default=5.0, help="seconds to hold them")
    ap.add_argument(
        "--latency-users", type=int, default=None, help="users connected (10000; --quick: 1000)"
    )
    ap.add_argument(
        "--latency-rates",
        default=None,
        help="personal notifications/s, one run each (200,500; --quick: 500)",
    )
    ap.add_argument("--latency-seconds", type=float, default=None, help="per run (6; quick 4)")


def scale_config(cfg: argparse.Namespace, fd_limit: int) -> None:
    """Sizes of the capacity and latency scenarios. Each capacity server is filled up to what its
    file limit allows, the last one gets the rest: 40,000 = 19,500 + 19,500 + 1,000. The
    handshakes of the two big servers then run in parallel, one per core."""
    total = cfg.capacity or (4000 if cfg.quick else 40_000)
    per = cfg.capacity_per_process or (2000 if cfg.quick else fd_limit - 500)
    cfg.capacity_shares = [min(per, total - i) for i in range(0, total, per)]
    cfg.latency_users = cfg.latency_users or (1000 if cfg.quick else 10_000)
    cfg.latency_rates = [
        int(x) for x in (cfg.latency_rates or ("500" if cfg.quick else "200,500")).split(",")
    ]
    cfg.latency_seconds = cfg.latency_seconds or (4.0 if cfg.quick else 6.0)


def scale_markdown(report: dict[str, Any]) -> list[str]:
    """The capacity and latency sections of the report."""
    extra = report.get("clarion_extra", {})
    lines: list[str] = []
    cap = extra.get("capacity")
    if cap and "servers" in cap:
        con = cap["connect"]
        gen = con["generator"]
        lines += [
            "## Connections held at once (several Clarion processes)",
            "",
            f"{len(cap['servers'])} `clarion serve` processes, each on its own port and SQLite "
            f"file, unpinned; one generator per server (one process per {PER_WORKER:,} "
            f"connections) from {len(cap['source_addresses'])} loopback source addresses; "
            f"open-file limit {cap['fd_limit']:,} per process. WebSocket, one distinct user per "
            "connection.",
            "",
            "| server | asked | held | failed | server's own count | KB per connection | "
            "RSS idle / connected (MB) | open files |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for i, s in enumerate(cap["servers"]):
            lines.append(
                f"| {i + 1} | {s['asked']:,} | {s['ok']:,} | {s['failed']:,} | "
                f"{s['server_count']:,} | {s['kb_per_conn']:.1f} | "
                f"{s['rss_idle_mb']} / {s['rss_connected_mb']} | {s['open_files']:,} |"
            )
        b = cap["broadcast"]
        lines += [
            f"| **all** | {cap['target']:,} | **{con['ok']:,}** | {con['failed']:,} | "
            f"{sum(s['server_count'] or 0 for s in cap['servers']):,} | | "
            f"{cap['servers_rss_mb']:,} MB in all | |",
            "",
            f"Opened in {con['seconds']} s ({con['per_second']:,} handshakes/s); generator "
            f"{gen['cpu']} cores, event-loop delay p99 {gen['loop_delay_p99_ms']} ms"
            + (" (**generator saturated**)" if gen["saturated"] else " (not saturated)")
            + f"; generator RSS {cap['generator_rss_mb']:,} MB. After {cap.get('held', 0):,} "
            f"were held a while, one notification to `all` on every server reached "
            f"{b['received']:,} of {b['open']:,} open connections, the last "
            f"{b['ms_to_last']} ms after the publishes ({b['closed']} closed).",
            "",
        ]
    lats = [(k, v) for k, v in extra.items() if k.startswith("latency") and v.get("runs")]
    if lats:
        lat = lats[0][1]
        lines += [
            f"## Publish-to-socket latency, personal notifications, {lat['users']:,} users "
            "connected",
            "",
            "Each connection is a distinct user (WebSocket). `bench/loadgen/http.mjs personal` "
            'POSTs `{"users": [one random user]}` at a fixed rate (open loop, up to 64 in '
            "flight); latency = arrival on that user's socket - the instant the request was "
            "sent. Server on core 0; publisher and generator on core 1. Garbage collector: "
            "`tuned` is Clarion's setting (app.py `_tune_gc`), `default` Python's "
            "(`CLARION_GC_TUNING=0`).",
            "",
            "| GC | rate/s | published (201) / received | p50 ms | p99 ms | p99.9 ms | max ms | "
            "201 p50 / p99 ms | server CPU | publisher / generator CPU | flags |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        runs = [
            ("default" if v.get("env", {}).get("CLARION_GC_TUNING") == "0" else "tuned", r)
            for _, v in lats
            for r in v["runs"].values()
        ]
        for gc_label, r in runs:
            lm, pm = r["latency_ms"], r["publish_201_ms"]
            flags = []
            if r["publisher"]["saturated"]:
                flags.append("publisher saturated")
            if r["generator"]["saturated"]:
                flags.append("generator saturated")
            if r["received"] != r["published"]:
                flags.append("incomplete")
            if r.get("other_cpu", 0) > NOISY:
                flags.append(f"noisy: {r['other_cpu']} cores elsewhere")
            lines.append(
                f"| {gc_label} | {r['rate']:,} | {r['published']:,} / {r['received']:,} | "
                f"{lm['p50']} | "
                f"{lm['p99']} | {lm['p999']} | {lm['max']} | {pm['p50']} / {pm['p99']} | "
                f"{r['server_cpu']} | {r['publisher']['cpu']} / {r['generator']['cpu']} | "
                f"{', '.join(flags) or '-'} |"
            )
        lines.append("")
    return lines


def scale_checks(report: dict[str, Any]) -> list[tuple[str, Any, bool]]:
    """Rows of the targets table for the capacity scenario."""
    cap = report.get("clarion_extra", {}).get("capacity")
    if not cap or "servers" not in cap:
        return []
    b = cap["broadcast"]
    most = max(s["ok"] for s in cap["servers"])
    return [
        (
            f"{cap['target']:,} concurrent connections on this machine, every one live",
            f"{cap['connect']['ok']:,} held; {b['received']:,} reached by a broadcast; "
            f"one process held {most:,}",
            cap["connect"]["ok"] >= cap["target"] and b["received"] >= cap["target"],
        )
    ]


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    node = subprocess.run(
        [shutil.which("node") or "node", "--version"], capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "node": node,
        "memory_gb": round(psutil.virtual_memory().total / 2**30),
    }


def find_clarion(arg: str | None) -> Path | None:
    if arg:
        return Path(arg)
    here = Path(sys.executable).parent / "clarion"
    if here.exists():
        return here
    found = shutil.which("clarion")
    return Path(found) if found else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a smaller run, under 2 minutes")
    ap.add_argument("--peers", default=",".join(PEERS), help="servers to measure, in order")
    ap.add_argument("--scenarios", default=None, help="fanout,memory,steady (memory is always on)")
    ap.add_argument("--conns", default=None, help="connection counts (1000,10000; --quick: 1000)")
    ap.add_argument("--clarion", default=None, help="path to the clarion executable")
    ap.add_argument("--baseline", default="clarion", help="server the ratios compare to")
    ap.add_argument("--size", type=int, default=100, help="payload bytes")
    ap.add_argument("--deliveries", type=int, default=None, help="deliveries per burst")
    ap.add_argument("--reps", type=int, default=None, help="measured bursts per level")
    ap.add_argument("--rate", type=int, default=20_000, help="steady deliveries/s")
    ap.add_argument("--steady-seconds", type=float, default=None)
    ap.add_argument(
        "--publish-concurrency",
        default=None,
        help="Clarion: POST /v1/notifications in flight during a fan-out burst, one measurement "
        "each; the first is the headline (default 4,16; 1 waits for each 201)",
    )
    ap.add_argument("--durable-concurrency", type=int, default=64, help="POSTs in flight")
    ap.add_argument("--durable-seconds", type=float, default=None, help="per durable run")
    ap.add_argument(
        "--postgres",
        default=None,
        help="also run the durable scenario on PostgreSQL: a server URL such as "
        "postgresql://postgres@127.0.0.1:5432 (a fresh database is created and dropped)",
    )
    ap.add_argument(
        "--plots", default=None, help="folder for the PNG plots (full mode: docs/img; 'none')"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=None,
        help="seconds to wait, before each server, for other processes to go quiet",
    )
    ap.add_argument("--out", default=str(RESULTS), help="folder for the results")
    ap.add_argument(
        "--connect-conns",
        default=None,
        help="connect scenario: connections per storm (5000,19500; --quick: 2000)",
    )
    ap.add_argument(
        "--replay-conns",
        type=int,
        default=None,
        help="connect scenario: Clarion reconnects replaying 100 events (1000; --quick: 300)",
    )
    add_scale_arguments(ap)
    cfg = ap.parse_args()
    cfg.mode = "quick" if cfg.quick else "full"
    cfg.conns = sorted(
        int(x) for x in (cfg.conns or ("1000" if cfg.quick else "1000,10000")).split(",")
    )
    cfg.scenarios = set(
        (
            cfg.scenarios
            or (
                "fanout,memory,connect,durable,latency,capacity"
                if cfg.quick
                else "fanout,memory,steady,connect,durable,transports,latency,capacity"
            )
        ).split(",")
    )
    cfg.publish_concurrency = [int(x) for x in (cfg.publish_concurrency or "4,16").split(",")]
    cfg.connect_conns = [
        int(x) for x in (cfg.connect_conns or ("2000" if cfg.quick else "5000,19500")).split(",")
    ]
    if cfg.replay_conns is None:
        cfg.replay_conns = 300 if cfg.quick else 1000
    cfg.durable_seconds = cfg.durable_seconds or (3.0 if cfg.quick else 5.0)
    if cfg.plots is None:
        cfg.plots = "none" if cfg.quick else str(BENCH.parent / "docs" / "img")
    cfg.deliveries = cfg.deliveries or (50_000 if cfg.quick else 200_000)
    cfg.reps = cfg.reps or (1 if cfg.quick else 3)
    cfg.burst_seconds = 3 if cfg.quick else 8
    cfg.steady_seconds = cfg.steady_seconds or (5 if cfg.quick else 6)
    cfg.settle = 1.0 if cfg.quick else 2.0
    cfg.max_bursts = cfg.reps if cfg.quick else 2 * cfg.reps  # noisy bursts are repeated
    if cfg.quiet_wait is None:
        cfg.quiet_wait = 2.0 if cfg.quick else 60.0

    limit = raise_fd_limit()
    scale_config(cfg, limit)
    if limit < max(cfg.conns) + 1000:
        console.print(
            f"[yellow]open-file limit is {limit}: {max(cfg.conns):,} connections may not fit"
        )
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the driver shares the generator's core, not the server's
    node = ensure_node()
    python = ensure_venv()
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    out_dir = Path(cfg.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg.logdir = WORK / "logs" / stamp
    cfg.logdir.mkdir(parents=True, exist_ok=True)

    targets: list[Target] = []
    for name in cfg.peers.split(","):
        if name == "clarion":
            binary = find_clarion(cfg.clarion)
            if not binary:
                console.print("[yellow]no `clarion` executable found: Clarion is skipped")
                continue
            targets.append(Clarion(cfg.logdir, binary, cfg.publish_concurrency[0]))
        elif name in PEERS:
            targets.append(Peer(name, cfg.logdir, node, python))
        else:
            raise BenchError(f"unknown peer {name!r}; known: {', '.join(PEERS)}")

    report: dict[str, Any] = {
        "started": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {
            "mode": cfg.mode,
            "conns": cfg.conns,
            "size": cfg.size,
            "deliveries": cfg.deliveries,
            "reps": cfg.reps,
            "rate": cfg.rate,
            "steady_seconds": cfg.steady_seconds,
            "scenarios": sorted(cfg.scenarios),
            "publish_concurrency": cfg.publish_concurrency,
            "durable_concurrency": cfg.durable_concurrency,
            "durable_seconds": cfg.durable_seconds,
            "capacity_shares": cfg.capacity_shares,
            "latency_users": cfg.latency_users,
            "latency_rates": cfg.latency_rates,
            "latency_seconds": cfg.latency_seconds,
            "connect_conns": cfg.connect_conns,
            "replay_conns": cfg.replay_conns,
        },
        "results": {},
        "ceilings": {},
        "errors": {},
    }
    report["baseline"] = (
        cfg.baseline
        if any(t.name == cfg.baseline for t in targets)
        else ("node_ws" if any(t.name == "node_ws" for t in targets) else "")
    )
    t_start = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        levels = cfg.scenarios & {"fanout", "memory", "steady"}
        overall = progress.add_task("benchmark", total=len(targets) * len(cfg.conns))
        step = progress.add_task("", total=None)
        for target in targets if levels else []:
            report["results"][target.name] = {}
            for n in cfg.conns:

                def note(text: str, name: str = target.name, n: int = n) -> None:
                    progress.update(step, description=f"{name} {n:,}: {text}")

                try:
                    level = run_level(target, n, cfg, node, note, progress, step)
                    report["results"][target.name][str(n)] = level
                    if target.name == "raw":
                        report["ceilings"][str(n)] = {
                            "loopback": level.get("fanout", {}).get("rate"),
                            "generator": level.get("generator_ceiling", {}).get("rate"),
                        }
                    f = level.get("fanout")
                    progress.console.print(
                        f"{LABELS.get(target.name, target.name)} at {n:,}: "
                        + (f"{fmt_rate(f['rate'])} deliveries/s, " if f else "")
                        + f"{level['memory']['kb_per_conn']:.1f} KB/conn"
                    )
                except (BenchError, httpx.HTTPError, OSError) as exc:
                    report["errors"][f"{target.name}@{n}"] = str(exc)
                    progress.console.print(f"[red]{target.name} at {n:,}: {exc}")
                progress.advance(overall)
        if "connect" in cfg.scenarios:
            run_connect(targets, cfg, node, report, progress, step)
        clarion = next((t for t in targets if isinstance(t, Clarion)), None)
        if clarion:
            run_extras(clarion, cfg, node, report, progress, step)
    report["seconds"] = round(time.monotonic() - t_start, 1)
    md = markdown(report)
    (out_dir / f"{stamp}.json").write_text(json.dumps(report, indent=1) + "\n")
    (out_dir / f"{stamp}.md").write_text(md + "\n")
    print(md)
    if cfg.plots != "none":
        try:
            made = plots(out_dir / f"{stamp}.json", Path(cfg.plots), python)
            console.print(f"plots: {', '.join(made)}")
        except BenchError as exc:
            console.print(f"[yellow]no plots: {exc}")
    console.print(
        f"wrote {out_dir / stamp}.json and .md in {report['seconds']} s (logs in {cfg.logdir})"
    )
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        console.print(f"[red]{exc}")
        sys.exit(2)
