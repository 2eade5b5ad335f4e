#!/usr/bin/env python3
"""The delivery log's cost on publish and on fan-out: Clarion with and without it, same run.

    python bench/control.py                       # 3 rounds each, interleaved
    python bench/control.py --rounds 1 --publishes 500 --conns 100   # quick

Each round starts a fresh `clarion serve` (SQLite, pinned to core 0 when `taskset` exists) with
`CLARION_DELIVERY_LOG=true`, then one with `false` (the order alternates), and measures:
  publish   P publishes, each to one of N named users who are all connected over WebSocket
            (so every publish is also a logged delivery), 16 in flight: publishes/s and the
            server's CPU seconds per 1,000 publishes.
  fanout    B broadcasts to the same N users by name and B to `all`: the server's CPU seconds
            per 1,000 deliveries, and deliveries/s until every client had every event.
The CPU of the server process is the figure to compare (the clients share the machine, so
their speed caps the rates); the report gives medians per setting and the ratio with / without.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import psutil
import websockets

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, workdir: Path, log: bool) -> None:
        self.port = free_port()
        self.secret = secrets.token_urlsafe(32)
        self.env = {
            **os.environ,
            "CLARION_JWT_SECRET": self.secret,
            "CLARION_DATABASE_URL": f"sqlite:///{workdir / 'clarion.db'}",
            "CLARION_DELIVERY_LOG": "true" if log else "false",
            "CLARION_RATE_LIMIT_PUBLISH": "1000000/second",
            "CLARION_RATE_LIMIT_IP": "1000000/second",
            "CLARION_RATE_LIMIT_USER": "1000000/second",
        }
        pin = ["taskset", "-c", "0"] if shutil.which("taskset") else []
        self.proc = subprocess.Popen(
            [
                *pin,
                str(BIN / "clarion"),
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        out = subprocess.run(
            [str(BIN / "clarion"), "keys", "create", "--name", "bench"],
            env=self.env,
            capture_output=True,
            check=True,
        )
        self.key = out.stdout.decode().strip()
        self.ps = psutil.Process(self.proc.pid)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> float:
        t = self.ps.cpu_times()
        return float(t.user + t.system)

    def token(self, user: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, self.secret, "HS256")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Tally:
    """Notifications received by all clients; `reached` is set once `want` have arrived."""

    def __init__(self) -> None:
        self.total = 0
        self.want = 0
        self.reached = asyncio.Event()

    def add(self) -> None:
        self.total += 1
        if self.total >= self.want:
            self.reached.set()

    async def until(self, want: int) -> None:
        self.want = want
        self.reached.clear()
        if self.total < want:
            await self.reached.wait()


async def connect(node: Node, user: str, tally: Tally) -> Any:
    ws = await websockets.connect(f"ws://127.0.0.1:{node.port}/v1/ws", max_queue=None)
    await ws.send(orjson.dumps({"type": "auth", "token": node.token(user)}).decode())
    await ws.recv()  # welcome

    async def read() -> None:
        async for message in ws:
            if b'"type":"notification"' in (
                message if isinstance(message, bytes) else message.encode()
            ):
                tally.add()

    return ws, asyncio.ensure_future(read())


async def measure(node: Node, args: argparse.Namespace) -> dict[str, float]:
    users = [f"b{i}" for i in range(args.conns)]
    tally = Tally()
    clients = [await connect(node, u, tally) for u in users]
    await asyncio.sleep(1)
    headers = {"Authorization": f"Bearer {node.key}"}
    async with httpx.AsyncClient(base_url=node.url, headers=headers, timeout=60) as http:

        async def publish(body: dict[str, Any]) -> None:
            r = await http.post("/v1/notifications", json=body)
            assert r.status_code == 201, r.text

        # publish: one named user each
        cpu0, t0 = node.cpu(), time.perf_counter()
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            async with sem:
                await publish({"users": [users[i % len(users)]], "title": f"p{i}"})

        await asyncio.gather(*(one(i) for i in range(args.publishes)))
        await tally.until(args.publishes)
        pub_s, pub_cpu = time.perf_counter() - t0, node.cpu() - cpu0
        out = {
            "publish/s": args.publishes / pub_s,
            "publish cpu s/1k": 1000 * pub_cpu / args.publishes,
        }
        for name, audience in (("named", {"users": users}), ("all", {"all": True})):
            before = tally.total
            want = before + args.broadcasts * len(users)
            cpu0, t0 = node.cpu(), time.perf_counter()
            for i in range(args.broadcasts):
                await publish({**audience, "title": f"{name}{i}"})
            await tally.until(want)
            took, cpu = time.perf_counter() - t0, node.cpu() - cpu0
            n = args.broadcasts * len(users)
            out[f"fanout {name} deliveries/s"] = n / took
            out[f"fanout {name} cpu s/1k"] = 1000 * cpu / n
        await asyncio.sleep(1.5)  # the background batch writes what it recorded
    for ws, task in clients:
        task.cancel()
        await ws.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--publishes", type=int, default=2000)
    parser.add_argument("--conns", type=int, default=200)
    parser.add_argument("--broadcasts", type=int, default=50)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for r in range(args.rounds):
        for log in (True, False) if r % 2 == 0 else (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                node = Node(Path(tmp), log)
                try:
                    results[log].append(asyncio.run(measure(node, args)))
                finally:
                    node.stop()
            print(f"round {r + 1} log={log}: {results[log][-1]}", flush=True)
    print(f"\n{'measure':34} {'with log':>12} {'without':>12} {'ratio':>7}")
    for key in results[True][0]:
        on = statistics.median(x[key] for x in results[True])
        off = statistics.median(x[key] for x in results[False])
        print(f"{key:34} {on:12.3f} {off:12.3f} {on / off:7.3f}")


if __name__ == "__main__":
    main()
