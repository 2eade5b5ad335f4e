"""CPU per inbox call against the notifications stored, in-process (no HTTP, no loopback).

A busy machine stretches wall-clock timings (bench/history.py) but hardly the CPU a call
consumes, so this is the figure that shows the slope on a shared machine: a store is filled
in-process with the data shape of bench/explain.py (broadcasts to `all`, topic notifications,
10% personal, 1% with a shared collapse key), and at each size the process CPU time of 20 calls
of each operation is divided by 20.

    python bench/inbox_cpu.py --sizes 1000,10000,100000,1000000 [--postgres URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from explain import drafts

from clarion.inbox import PagePosition
from clarion.store import SQLStore

CALLS = 20


async def cpu_per_call(call: Callable[[], Awaitable[Any]]) -> float:
    await call()
    started = time.process_time()
    for _ in range(CALLS):
        await call()
    return (time.process_time() - started) / CALLS * 1000


async def measure(url: str, sizes: list[int]) -> list[dict[str, float]]:
    store = SQLStore(url)
    await store.connect()
    rows = []
    try:
        users = [f"u{i}" for i in range(10_000)]
        topics = [f"topic:t{i}" for i in range(10)]
        me = "u1"
        await store.follow([me], "all", grant=True)
        await store.follow([me], topics[0], grant=True)
        stored = 0
        for size in sizes:
            while stored < size:
                await store.publish(drafts(min(500, size - stored), users, topics))
                stored += min(500, size - stored)
            page = await store.list_inbox(me, "all", 20, PagePosition())
            nid = page.items[0]["id"]
            row = {"stored": float(stored)}
            row["unread count"] = await cpu_per_call(lambda: store.unread_count(me))
            row["first page"] = await cpu_per_call(
                lambda: store.list_inbox(me, "all", 20, PagePosition())
            )
            after = PagePosition.decode(page.next_cursor)
            row["next page"] = await cpu_per_call(
                lambda after=after: store.list_inbox(me, "all", 20, after)
            )
            row["unread page"] = await cpu_per_call(
                lambda: store.list_inbox(me, "unread", 20, PagePosition())
            )
            row["snapshot"] = await cpu_per_call(lambda: store.snapshot(me, [f"user:{me}", "all"]))
            row["mark read"] = await cpu_per_call(
                lambda nid=nid: store.change_state(me, "read", nid)
            )
            row["read-all"] = await cpu_per_call(lambda: store.change_state(me, "read_all", None))
            rows.append(row)
            print(" ".join(f"{k} {v:,.2f}" for k, v in row.items()), flush=True)
    finally:
        await store.close()
    return rows


def remove(path: str) -> None:
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--postgres", help="a server URL; a fresh database is made and dropped")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    path = f"/tmp/clarion-inbox-cpu-{os.getpid()}.db"
    print("SQLite (CPU ms per call)")
    try:
        await measure(f"sqlite:///{path}", sizes)
    finally:
        remove(path)
    if args.postgres:
        name = "clarion_cpu_" + secrets.token_hex(4)
        admin = await asyncpg.connect(args.postgres.rstrip("/") + "/postgres")
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            print("PostgreSQL (CPU ms per call, client side)")
            await measure(args.postgres.rstrip("/") + "/" + name, sizes)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


if __name__ == "__main__":
    asyncio.run(main())
