"""Servers under test: Clarion (`clarion serve` on a fresh database) and the peers in
bench/peers, each started fresh, pinned, and driven through one small interface."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psutil

from clarion_bench.proc import BENCH, NODE_DIR, BenchError, free_port, now_ms, pin, stop_process

PEERS = ["raw", "node_ws", "node_socketio", "py_websockets", "py_socketio", "clarion"]
# The Node peers as they were before issue #17, yielding to the event loop between two
# payloads: a second row, measured by `--peers all` (make bench-full), not by default.
PAUSED = ["node_ws_paused", "node_socketio_paused"]
ALL_PEERS = [*PEERS[:3], *PAUSED, *PEERS[3:]]
LABELS = {
    "raw": "raw frames (loopback ceiling)",
    "node_ws": "Node ws",
    "node_socketio": "Node Socket.IO",
    "node_ws_paused": "Node ws, yielding between payloads",
    "node_socketio_paused": "Node Socket.IO, yielding between emits",
    "py_websockets": "Python websockets (uvloop)",
    "py_socketio": "python-socketio (uvicorn)",
    "clarion": "Clarion",
}


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
        self.protocol = "socketio" if "socketio" in name else "plain"

    def command(self) -> tuple[list[str], dict[str, str]]:
        peers = BENCH / "peers"
        port = str(self.port)
        self.control_port = self.port
        env = {"BENCH_NODE_DIR": str(NODE_DIR)}
        if self.name == "raw":
            return [self.node, str(peers / "node_ws.mjs"), "--port", port, "--raw"], env
        if self.name in ("node_ws", "node_socketio"):
            return [self.node, str(peers / f"{self.name}.mjs"), "--port", port], env
        if self.name in PAUSED:
            script = peers / f"{self.name.removesuffix('_paused')}.mjs"
            return [self.node, str(script), "--port", port, "--paused"], env
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

    users = "bench-"  # the storms' user names: this prefix and a number

    def tokens_file(self, n: int) -> str:
        path = self.tmp / f"tokens-{n}.txt"
        if not path.exists():
            users = (f"{self.users}{i}" for i in range(n))
            path.write_text("\n".join(mint_hs256(self.secret, u) for u in users))
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


class StoredClarion(Clarion):
    """Clarion on a fresh copy of a kept SQLite store (bench/history.py's), or on an empty one
    when `store` is None, its connections being the store's users (`u0`, `u1`...: topic
    followers from the start, with personal notifications): a connect storm against history,
    and the same storm against nothing to compare it with. A copy per start, so the follows a
    storm writes never reach the next one."""

    users = "u"

    def __init__(self, logdir: Path, binary: Path, store: Path | None) -> None:
        super().__init__(logdir, binary, 1)
        self.store = store
        self.name = "clarion"

    def env(self) -> dict[str, str]:
        # No retention run at start: it would delete the history's expired ones mid-storm.
        return {**super().env(), "CLARION_RETENTION_INTERVAL": "86400"}

    def command(self) -> tuple[list[str], dict[str, str]]:
        argv, env = super().command()  # removes the last start's copy
        if self.store is not None:
            # The kept store is one self-contained file (history.py saves it by SQLite's backup).
            shutil.copyfile(self.store, self.tmp / "bench.db")
        return argv, env
