#!/usr/bin/env python3
"""Ingest: how fast each consumer drains a backlog, and its publish-to-socket latency.

    python bench/ingest.py                        # 20,000 queued messages, 5 s at 500/s
    python bench/ingest.py --messages 100000      # the issue's burst
    python bench/ingest.py --sources redis,nats --stores sqlite

Two measurements, each on a fresh `clarion serve` per source and store (SQLite file, or a fresh
PostgreSQL database), against the machine's real PostgreSQL, RabbitMQ, NATS and Redis:
  drain     N one-user messages queued before the node starts, then consumed: messages/s =
            (N - 1) / (last - first `created_at` of the stored notifications), so start-up and
            polling are not counted. Beside them, in the same run and on the same store, the HTTP
            batch API (`POST /v1/notifications/batch`, 100 per request, 4 requests in flight)
            measured the same way: the ratio source / HTTP is what to compare across machines.
  latency   one WebSocket connected for the user; messages sent to the source at a fixed pace
            (default 500/s for 5 s), each stamped with its *scheduled* send time (no coordinated
            omission); latency = receipt - stamp. Beside them, the HTTP API at the same pace.
Results: bench/results/ingest-<stamp>.json and .md. The sources come from the test harness
(tests/harness/sources.py): fresh queue, stream, table per run, removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AsyncExitStack as ExitStackAsync
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from harness.services import POSTGRES_URL, postgres_database  # noqa: E402
from harness.sources import (  # noqa: E402
    AMQP_URL,
    KINDS,
    JetStream,
    Outbox,
    Rabbit,
    Source,
    source,
)

BIN = Path(sys.executable).parent
RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    """One `clarion serve` process with the given consumers."""

    def __init__(self, workdir: Path, database: str, consume: list[str], key: bool = True) -> None:
        self.port = free_port()
        self.secret = secrets.token_urlsafe(32)
        self.database = database
        self.env = {
            **os.environ,
            "CLARION_JWT_SECRET": self.secret,
            "CLARION_DATABASE_URL": database,
            "CLARION_CONSUME": json.dumps(consume),
            "CLARION_RATE_LIMIT_PUBLISH": "1000000/second",
        }
        self.log = open(workdir / f"server-{self.port}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(BIN / "clarion"), "serve", "--port", str(self.port), "--log-level", "warning"],
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, "server exited"
            try:
                if httpx.get(self.url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.05)
        self.api_key = ""
        if key:  # not while a backlog drains: the CLI process would compete for the cores
            out = subprocess.run(
                [str(BIN / "clarion"), "keys", "create", "--name", "bench"],
                env=self.env,
                capture_output=True,
                check=True,
            )
            self.api_key = out.stdout.decode().strip()

    def token(self, user: str) -> str:
        now = int(time.time())
        return jwt.encode({"sub": user, "iat": now, "exp": now + 3600}, self.secret, "HS256")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


async def _created(database: str) -> list[dt.datetime]:
    """Every notification's `created_at` in the node's store."""
    query = "SELECT created_at FROM notifications"
    if database.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database.split(":///", 1)[1]) as db:
            return [dt.datetime.fromisoformat(str(r[0])) for r in db.execute(query)]
    import asyncpg

    conn = await asyncpg.connect(database)
    try:
        return [r[0] for r in await conn.fetch(query)]
    finally:
        await conn.close()


def rate(created: list[dt.datetime]) -> float:
    span = (max(created) - min(created)).total_seconds()
    return (len(created) - 1) / span if span > 0 else float("nan")


async def wait_for(database: str, count: int, limit: float) -> list[dt.datetime]:
    deadline = time.monotonic() + limit
    while True:
        created = await _created(database)
        if len(created) >= count:
            return created
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(created)} of {count} stored after {limit} s")
        await asyncio.sleep(0.5)


def body(user: str, n: int, t: float | None = None) -> dict[str, Any]:
    return {"users": [user], "title": f"n{n}", "data": {"n": n, "t": t}}


class Sender:
    """A connection to a source (a pool, for the outbox), as an app keeps one; each message is
    sent on its own (one transaction, one publish)."""

    def __init__(self, src: Source) -> None:
        self.src = src
        self.conn: Any = None

    async def __aenter__(self) -> Sender:
        src = self.src
        if isinstance(src, Outbox):
            import asyncpg

            self.conn = await asyncpg.create_pool(src.db_url, min_size=4, max_size=16)
        elif isinstance(src, Rabbit):
            import aio_pika

            self.conn = await aio_pika.connect(AMQP_URL)
            self.channel = await self.conn.channel(publisher_confirms=True)
        elif isinstance(src, JetStream):
            import nats

            self.conn = await nats.connect(src.server)
            self.js = self.conn.jetstream()
        else:
            import redis.asyncio as aioredis

            self.conn = aioredis.Redis.from_url(src.server)
        return self

    async def send(self, item: dict[str, Any], id: str) -> None:
        data, src = orjson.dumps(item), self.src
        if isinstance(src, Outbox):  # one app transaction per message
            await self.conn.execute(
                f"INSERT INTO {src.table} (payload) VALUES ($1::jsonb)", data.decode()
            )
        elif isinstance(src, Rabbit):
            import aio_pika

            await self.channel.default_exchange.publish(
                aio_pika.Message(data, message_id=id), routing_key=src.queue
            )
        elif isinstance(src, JetStream):
            await self.js.publish(src.subject, data)
        else:
            await self.conn.xadd(src.stream, {"payload": data})

    async def __aexit__(self, *exc: object) -> None:
        close = getattr(self.conn, "aclose", None) or self.conn.close
        await close()


@contextmanager
def store(kind: str, workdir: Path) -> Any:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / ('bench-' + secrets.token_hex(4) + '.db')}"
    else:
        with postgres_database() as url:
            yield url


async def drain(src: Source | None, database: str, workdir: Path, n: int) -> float:
    """Messages/s drained from a backlog of `n` (src None: the HTTP batch API)."""
    user = "bench-" + secrets.token_hex(4)
    if src is not None:
        await src.send([(body(user, i), f"m{i}") for i in range(n)])
        node = Node(workdir, database, [src.consume_url()], key=False)
        try:
            return rate(await wait_for(database, n, limit=max(120, n / 100)))
        finally:
            node.stop()
    node = Node(workdir, database, [])
    try:
        headers = {"Authorization": f"Bearer {node.api_key}"}
        batches = [[body(user, i) for i in range(s, min(n, s + 100))] for s in range(0, n, 100)]
        async with httpx.AsyncClient(timeout=60) as client:
            queue = list(reversed(batches))

            async def worker() -> None:
                while queue:
                    items = queue.pop()
                    r = await client.post(
                        node.url + "/v1/notifications/batch",
                        json={"notifications": items},
                        headers=headers,
                    )
                    r.raise_for_status()

            await asyncio.gather(*(worker() for _ in range(4)))
        return rate(await wait_for(database, n, limit=60))
    finally:
        node.stop()


async def latency(
    src: Source | None, database: str, workdir: Path, per_second: int, seconds: float
) -> dict[str, float]:
    """Publish-to-socket latency (ms) through a source (None: `POST /v1/notifications`)."""
    import websockets

    node = Node(workdir, database, [src.consume_url(wait="1")] if src is not None else [])
    user = "bench-" + secrets.token_hex(4)
    total = int(per_second * seconds)
    got: list[float] = []
    try:
        ws_url = f"ws://127.0.0.1:{node.port}/v1/ws"
        async with websockets.connect(ws_url, ping_interval=None, max_queue=None) as ws:
            await ws.send(orjson.dumps({"type": "auth", "token": node.token(user)}).decode())

            async def receive() -> None:
                while len(got) < total:
                    event = orjson.loads(await ws.recv())
                    if event.get("type") == "notification":
                        got.append(time.time() - event["notification"]["data"]["t"])

            reader = asyncio.create_task(receive())
            headers = {"Authorization": f"Bearer {node.api_key}"}
            async with httpx.AsyncClient(timeout=30) as client, ExitStackAsync() as stack:
                sender = await stack.enter_async_context(Sender(src)) if src else None
                start = time.time() + 0.5
                sends = []
                for i in range(total):
                    at = start + i / per_second
                    await asyncio.sleep(max(0.0, at - time.time()))
                    item = body(user, i, at)
                    if sender is None:
                        call = client.post(
                            node.url + "/v1/notifications", json=item, headers=headers
                        )
                    else:
                        call = sender.send(item, f"m{i}")
                    sends.append(asyncio.create_task(call))  # type: ignore[arg-type]
                await asyncio.gather(*sends)
            await asyncio.wait_for(reader, timeout=60)
    finally:
        node.stop()
    got.sort()
    return {
        "count": len(got),
        "p50_ms": round(statistics.median(got) * 1000, 1),
        "p99_ms": round(got[int(len(got) * 0.99) - 1] * 1000, 1),
        "max_ms": round(got[-1] * 1000, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500, help="messages/s for the latency run")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--sources", default=",".join(KINDS))
    parser.add_argument("--stores", default="sqlite,postgres")
    args = parser.parse_args()
    kinds = [k for k in args.sources.split(",") if k]
    results: dict[str, Any] = {
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "messages": args.messages,
        "rate": args.rate,
        "seconds": args.seconds,
        "postgres": POSTGRES_URL.rsplit("/", 1)[0],
        "drain": {},
        "latency": {},
    }
    workdir = Path(tempfile.mkdtemp(prefix="clarion-bench-ingest-"))
    for store_kind in args.stores.split(","):
        row: dict[str, float] = {}
        for kind in ["http", *kinds]:
            with ExitStack() as stack:
                database = stack.enter_context(store(store_kind, workdir))
                src = None if kind == "http" else stack.enter_context(source(kind))
                row[kind] = round(asyncio.run(drain(src, database, workdir, args.messages)))
                print(f"drain {store_kind:8} {kind:7} {row[kind]:>8,.0f} msg/s", flush=True)
        results["drain"][store_kind] = row
    for kind in ["http", *kinds]:
        with ExitStack() as stack:
            database = stack.enter_context(store("sqlite", workdir))
            src = None if kind == "http" else stack.enter_context(source(kind))
            lat = asyncio.run(latency(src, database, workdir, args.rate, args.seconds))
            results["latency"][kind] = lat
            print(f"latency sqlite {kind:7} {lat}", flush=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"ingest-{stamp}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"ingest-{stamp}.md").write_text(report(results))
    print(report(results))


def report(results: dict[str, Any]) -> str:
    kinds = list(next(iter(results["drain"].values())).keys()) if results["drain"] else []
    lines = [
        f"# Ingest, {results['started']}",
        "",
        f"Drain of {results['messages']:,} queued one-user messages, messages/s "
        "(HTTP: the batch API, 100 per request, 4 in flight):",
        "",
        "| store | " + " | ".join(kinds) + " |",
        "|---|" + "---:|" * len(kinds),
    ]
    for name, row in results["drain"].items():
        http = row.get("http") or 1
        cells = [f"{row[k]:,} ({row[k] / http:.2f}x)" for k in kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Publish-to-socket latency at {results['rate']}/s for {results['seconds']} s, SQLite "
        "(HTTP: `POST /v1/notifications`):",
        "",
        "| source | p50 ms | p99 ms | max ms | received |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, lat in results["latency"].items():
        lines.append(
            f"| {name} | {lat['p50_ms']} | {lat['p99_ms']} | {lat['max_ms']} | {lat['count']} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
