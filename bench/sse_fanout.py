#!/usr/bin/env python3
"""Broadcast fan-out over SSE against WebSocket, on the same build, in the same sitting.

    python bench/sse_fanout.py                              # 2,000 connections, 3 rounds
    python bench/sse_fanout.py --conns 10000 --broadcasts 40 --rounds 2
    python bench/sse_fanout.py --clarion /path/to/other/clarion   # another checkout

`bench/loadgen` speaks only WebSocket, so the clients here are this script's own: one asyncio
process (uvloop) holding N raw sockets, either WebSockets (`GET /v1/ws`, an `auth` frame) or
SSE streams (`GET /v1/sse` with the token in `Authorization`), each counting the bench's
notifications in the bytes it receives (no parsing: the client must not be what is measured).
Per round and transport: a fresh `clarion serve` (SQLite, pinned to core 0 as run.py's are),
N connections, one warm-up broadcast that every connection must receive, then `--broadcasts`
broadcasts to `all` with `--inflight` publishes in flight (run.py's fan-out setting), until every
connection has them all. Reported: deliveries/s (wall clock: noisy on a shared machine) and
deliveries per server CPU second from /proc (the server's own cost, what the comparison is
about), the transports alternating (ws, sse, ws, sse, ...). The keepalive is set long
(`CLARION_HEARTBEAT`), since these clients answer no pings. Results:
bench/results/sse-fanout-<stamp>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import datetime as dt
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from clarion_bench.proc import RESULTS, WORK, BenchError, find_clarion, machine, raise_fd_limit
from clarion_bench.targets import Clarion

MARK = b'"type":"bench"'  # once in each delivered notification, on either transport


class Counter(asyncio.Protocol):
    """One connection: counts MARK in what arrives (a MARK split between reads included)."""

    def __init__(self, ready: asyncio.Future[None], ends_handshake: bytes) -> None:
        self.ready = ready
        self.ends_handshake = ends_handshake
        self.seen = b""
        self.count = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.seen += data
            if self.ends_handshake in self.seen:
                self.ready.set_result(None)
                data, self.seen = self.seen, b""
            else:
                return
        chunk = self.tail + data
        self.count += chunk.count(MARK)
        self.tail = chunk[-(len(MARK) - 1) :]  # too short to hold a whole (counted) MARK

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(BenchError("connection closed during its handshake"))


def ws_open(token: str, port: int) -> tuple[bytes, bytes]:
    """The handshake request, then the masked `auth` frame (sent after the 101)."""
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()
    payload = json.dumps({"type": "auth", "token": token}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    n = len(payload)
    length = bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + n.to_bytes(2, "big")
    return head, b"\x81" + length + mask + masked


def sse_open(token: str, port: int) -> bytes:
    return (
        f"GET /v1/sse HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n"
        f"Authorization: Bearer {token}\r\n\r\n"
    ).encode()


async def connect(kind: str, token: str, port: int, gate: asyncio.Semaphore) -> Counter:
    loop = asyncio.get_running_loop()
    async with gate:
        if kind == "ws":
            head, auth = ws_open(token, port)
            upgraded = loop.create_future()
            proto = Counter(upgraded, b"\r\n\r\n")
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
            assert proto.transport is not None
            proto.transport.write(head)
            await asyncio.wait_for(upgraded, 60)
            proto.ready = loop.create_future()
            proto.ends_handshake = b'"unread"'
            proto.seen = b""
            proto.transport.write(auth)
        else:
            proto = Counter(loop.create_future(), b'"unread"')
            await loop.create_connection(lambda: proto, "127.0.0.1", port)
            assert proto.transport is not None
            proto.transport.write(sse_open(token, port))
        await asyncio.wait_for(proto.ready, 60)
        return proto


async def until(conns: list[Counter], each: int, within: float) -> int:
    """Wait until every connection has counted `each`; the total counted."""
    deadline = time.monotonic() + within
    while True:
        total = sum(c.count for c in conns)
        if total >= each * len(conns) or time.monotonic() > deadline:
            return total
        await asyncio.sleep(0.01)


async def one_run(target: Clarion, kind: str, n: int, broadcasts: int, size: int) -> dict[str, Any]:
    target.start()
    conns: list[Counter] = []
    try:
        tokens = (await asyncio.to_thread(Path(target.tokens_file(n)).read_text)).splitlines()
        gate = asyncio.Semaphore(50)  # under CLARION_MAX_PENDING_AUTH
        t = time.monotonic()
        conns = list(
            await asyncio.gather(*(connect(kind, tok, target.port, gate) for tok in tokens))
        )
        opened = time.monotonic() - t
        await asyncio.to_thread(target.publish, 1, size, 0)  # warm-up: every path once
        if await until(conns, 1, 60) < n:
            raise BenchError(f"{kind}: the warm-up broadcast did not reach every connection")
        await asyncio.sleep(0.5)
        cpu0, t0 = target.cpu_seconds(), time.monotonic()
        publishing = asyncio.create_task(asyncio.to_thread(target.publish, broadcasts, size, 1))
        got = await until(conns, 1 + broadcasts, 120 + broadcasts * n / 2000)
        t1, cpu1 = time.monotonic(), target.cpu_seconds()
        await publishing
        delivered = got - n
        if delivered < broadcasts * n:
            raise BenchError(f"{kind}: {delivered:,} of {broadcasts * n:,} deliveries arrived")
        return {
            "transport": kind,
            "connections": n,
            "connect_s": round(opened, 1),
            "deliveries": delivered,
            "seconds": round(t1 - t0, 3),
            "server_cpu_s": round(cpu1 - cpu0, 3),
            "deliveries_per_s": round(delivered / (t1 - t0)),
            "deliveries_per_cpu_s": round(delivered / max(cpu1 - cpu0, 1e-9)),
            "cpu_s_per_million": round((cpu1 - cpu0) / delivered * 1e6, 2),
        }
    finally:
        for c in conns:
            if c.transport is not None:
                c.transport.close()
        target.stop()


def report(runs: list[dict[str, Any]], args: argparse.Namespace, load: tuple[float, ...]) -> str:
    lines = [
        f"# SSE against WebSocket fan-out ({args.conns:,} connections, {args.broadcasts} "
        f"broadcasts, {args.inflight} in flight)",
        "",
        f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        "",
        "| round | transport | deliveries/s | deliveries per server CPU s | server CPU s per 1M |",
        "|---|---|---|---|---|",
    ]
    for i, r in enumerate(runs):
        lines.append(
            f"| {i // 2 + 1} | {r['transport']} | {r['deliveries_per_s']:,} | "
            f"{r['deliveries_per_cpu_s']:,} | {r['cpu_s_per_million']} |"
        )
    med = {
        kind: {
            key: statistics.median(r[key] for r in runs if r["transport"] == kind)
            for key in ("deliveries_per_s", "deliveries_per_cpu_s")
        }
        for kind in ("ws", "sse")
        if any(r["transport"] == kind for r in runs)
    }
    if len(med) < 2:
        return "\n".join(lines) + "\n"
    lines += [
        "",
        f"median SSE / WebSocket: deliveries/s "
        f"{med['sse']['deliveries_per_s'] / med['ws']['deliveries_per_s']:.2f}x, "
        f"deliveries per server CPU s "
        f"{med['sse']['deliveries_per_cpu_s'] / med['ws']['deliveries_per_cpu_s']:.2f}x",
    ]
    return "\n".join(lines) + "\n"


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    binary = find_clarion(args.clarion)
    if binary is None:
        raise BenchError("no clarion executable found (--clarion PATH)")
    logdir = WORK / "logs" / f"sse-fanout-{args.stamp}"
    logdir.mkdir(parents=True, exist_ok=True)
    target = Clarion(logdir, binary, args.inflight)
    target.extra_env["CLARION_HEARTBEAT"] = "3600"  # these clients answer no pings
    runs = []
    for r in range(args.rounds):
        kinds = args.transports.split(",")
        for kind in kinds if r % 2 == 0 else kinds[::-1]:
            run = await one_run(target, kind, args.conns, args.broadcasts, args.size)
            print(json.dumps(run), flush=True)
            runs.append(run)
    return runs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--broadcasts", type=int, default=50)
    ap.add_argument("--inflight", type=int, default=4, help="publishes in flight")
    ap.add_argument("--size", type=int, default=256, help="notification body size, bytes")
    ap.add_argument("--rounds", type=int, default=3, help="each round: both transports")
    ap.add_argument("--clarion", default=None, help="path to the clarion executable")
    ap.add_argument("--transports", default="ws,sse", help="ws,sse (default), ws or sse")
    args = ap.parse_args()
    args.stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    raise_fd_limit()
    load = os.getloadavg()
    try:
        import uvloop

        runs = uvloop.run(main_async(args))
    except ImportError:
        runs = asyncio.run(main_async(args))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"sse-fanout-{args.stamp}"
    meta = {"args": {k: v for k, v in vars(args).items()}, "load": load, "machine": machine()}
    out.with_suffix(".json").write_text(json.dumps({**meta, "runs": runs}, indent=2))
    text = report(runs, args, load)
    out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
