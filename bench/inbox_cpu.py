"""CPU per inbox call against the notifications stored, in-process (no HTTP, no loopback).

A busy machine stretches wall-clock timings (bench/history.py) but hardly the CPU a call
consumes, so this is the figure that shows the slope on a shared machine: a store is filled
in-process with the data shape of bench/explain.py (broadcasts to `all`, topic notifications,
10% personal, 1% with a shared collapse key), and at each size the process CPU time of 20 calls
of each operation is divided by 20 (the median of 5 such batches).

    python bench/inbox_cpu.py --sizes 1000,10000,100000,1000000 [--postgres URL]
    python bench/inbox_cpu.py --sizes 1000,1000000 --templates bench/.work/inbox-cpu
    python bench/inbox_cpu.py --sizes 100000 --ttl-share 0.9 --followers 100 \
        --templates bench/.work/inbox-cpu-ttl

`--ttl-share F`: that share of the notifications carries a `ttl` (`--ttl-days`, 7: all still
live while measured), as an app whose notifications all expire. `--followers N`: users u0...
follow `all` and a topic each from the start, and `snapshots` is the CPU per user of one batch
of N snapshots (what a connect storm's handshakes read together).

With `--templates DIR` (SQLite) the store of each size is kept there as it was before its
calls were measured, and a later run starts each size from that copy instead of publishing
again: so one code and another (`PYTHONPATH=<other checkout>/src`) are measured on the very
same rows, and a million is built once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import timedelta
from typing import Any

import asyncpg
from explain import drafts

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.inbox import PagePosition
from clarion.store import SQLStore

CALLS = 20
BATCHES = 5


async def cpu_per_call(call: Callable[[], Awaitable[Any]]) -> float:
    """Median over BATCHES of the process CPU of CALLS calls, per call (ms): a busy machine
    stretches some batches (cache misses, frequency), the median keeps the typical one."""
    await call()
    per_batch = []
    for _ in range(BATCHES):
        started = time.process_time()
        for _ in range(CALLS):
            await call()
        per_batch.append((time.process_time() - started) / CALLS * 1000)
    return statistics.median(per_batch)


def set_repetitions(calls: int, batches: int) -> None:
    """Fewer calls per batch or batches (`--calls`, `--batches`) for slow operations."""
    global CALLS, BATCHES
    CALLS, BATCHES = calls, batches


def expiring(batch: list[Draft], share: float, ttl: timedelta) -> list[Draft]:
    """The first `share` of the batch with an expiry `ttl` after its creation (doc included)."""
    out = []
    for i, d in enumerate(batch):
        if i < share * len(batch):
            at = d.created_at + ttl
            doc = notification_doc(
                d.id,
                iso(d.created_at),
                type=d.type,
                priority=d.priority,
                title="t",
                expires_at=iso(at),
            )
            d = replace(d, doc=doc, expires_at=at)
        out.append(d)
    return out


async def measure(
    url: str,
    sizes: list[int],
    templates: str | None = None,
    ttl_share: float = 0.0,
    ttl: timedelta = timedelta(days=7),
    followers: int = 0,
) -> list[dict[str, float]]:
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else None
    store = SQLStore(url)
    await store.connect()
    rows = []
    try:
        users = [f"u{i}" for i in range(10_000)]
        topics = [f"topic:t{i}" for i in range(10)]
        me = "u1"
        await store.follow([me], "all", grant=True)
        await store.follow([me], topics[0], grant=True)
        fans = [f"u{i}" for i in range(followers)]
        if fans:
            await store.follow(fans, "all", grant=True)
            for i, topic in enumerate(topics):
                await store.follow(fans[i :: len(topics)], topic, grant=True)
        stored = 0
        for size in sizes:
            kept = os.path.join(templates, f"{size}.db") if templates and path else None
            if kept and path and has(kept):
                await store.close()
                restore(kept, path)
                store = SQLStore(url)
                await store.connect()
                stored = size
            while stored < size:
                batch = drafts(min(500, size - stored), users, topics)
                await store.publish(expiring(batch, ttl_share, ttl))
                stored += min(500, size - stored)
            if kept and path and not has(kept):
                await store.close()  # checkpoints the WAL into the file
                keep(path, kept)
                store = SQLStore(url)
                await store.connect()
            row = {"stored": float(stored)} | await calls(store, me, fans)
            rows.append(row)
            print(" ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    finally:
        await store.close()
    return rows


async def calls(store: SQLStore, me: str, fans: list[str]) -> dict[str, float]:
    """CPU ms per call of each operation, for user `me` (`snapshots`: per user of `fans`)."""
    page = await store.list_inbox(me, "all", 20, PagePosition())
    nid = page.items[0]["id"]
    after = PagePosition.decode(page.next_cursor)
    batch = [(u, [f"user:{u}", "all"], True) for u in fans]
    per_fan = {}
    if fans:
        per_fan["snapshots"] = await cpu_per_call(lambda: store.snapshots(batch)) / len(fans)
    return per_fan | {
        "unread count": await cpu_per_call(lambda: store.unread_count(me)),
        "first page": await cpu_per_call(lambda: store.list_inbox(me, "all", 20, PagePosition())),
        "next page": await cpu_per_call(lambda: store.list_inbox(me, "all", 20, after)),
        "unread page": await cpu_per_call(
            lambda: store.list_inbox(me, "unread", 20, PagePosition())
        ),
        "snapshot": await cpu_per_call(lambda: store.snapshot(me, [f"user:{me}", "all"])),
        "mark read": await cpu_per_call(lambda: store.change_state(me, "read", nid)),
        "read-all": await cpu_per_call(lambda: store.change_state(me, "read_all", None)),
    }


def has(kept: str) -> bool:
    return os.path.exists(kept)


def restore(kept: str, path: str) -> None:
    remove(path)
    shutil.copyfile(kept, path)


def keep(path: str, kept: str) -> None:
    shutil.copyfile(path, kept + ".part")
    os.replace(kept + ".part", kept)


def remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--postgres", help="a server URL; a fresh database is made and dropped")
    parser.add_argument("--templates", help="folder keeping each size's SQLite store (see above)")
    parser.add_argument("--ttl-share", type=float, default=0.0, help="share with a ttl (0-1)")
    parser.add_argument("--ttl-days", type=float, default=7.0, help="their ttl")
    parser.add_argument("--followers", type=int, default=0, help="users measured by snapshots")
    parser.add_argument("--calls", type=int, default=CALLS, help="calls per measured batch")
    parser.add_argument("--batches", type=int, default=BATCHES, help="batches (median taken)")
    args = parser.parse_args()
    set_repetitions(args.calls, args.batches)
    shape: dict[str, Any] = {
        "ttl_share": args.ttl_share,
        "ttl": timedelta(days=args.ttl_days),
        "followers": args.followers,
    }
    if args.templates:
        os.makedirs(args.templates, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    path = f"/tmp/clarion-inbox-cpu-{os.getpid()}.db"
    print("SQLite (CPU ms per call)")
    try:
        await measure(f"sqlite:///{path}", sizes, args.templates, **shape)
    finally:
        remove(path)
    if args.postgres:
        name = "clarion_cpu_" + secrets.token_hex(4)
        admin = await asyncpg.connect(args.postgres.rstrip("/") + "/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            print("PostgreSQL (CPU ms per call, client side)")
            await measure(args.postgres.rstrip("/") + "/" + name, sizes, **shape)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
