"""CPU per notification of the store's publish transaction, in-process (no HTTP, no loopback).

A busy machine stretches wall-clock rates and shares the server's core unevenly between builds
(docs/benchmarks.md), but hardly the CPU a transaction consumes. This writes batches of B
one-user drafts through `SQLStore.publish`, the call the group commit makes, and reports the
process CPU (both threads: the event loop's and the SQLite writer's) per notification, the
median of 5 rounds. SQLite runs with `synchronous=OFF` by default so the figure is CPU, not
fsync; another build is measured with `PYTHONPATH=<its checkout>/src`.

    python bench/group_commit_cpu.py --batches 1,4,16 --commits 300
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from clarion.domain import Draft
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore


def drafts(n: int) -> list[Draft]:
    now = datetime.now(UTC)
    out = []
    for _ in range(n):
        id = new_id()
        doc = notification_doc(id, now.isoformat(), type="message", priority="normal", title="x")
        user = f"u{new_id()}"
        out.append(
            Draft(id=id, type="message", priority="normal", doc=doc, created_at=now, users=[user])
        )
    return out


async def measure(batch: int, commits: int, synchronous: str) -> float:
    """Median CPU milliseconds per notification over 5 rounds of `commits` transactions."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLStore(f"sqlite:///{Path(tmp) / 'publish.db'}")
        store.db._synchronous = synchronous
        await store.connect()
        try:
            for _ in range(20):  # warm: statement caches, type cache
                await store.publish(drafts(batch))
            rounds = []
            for _ in range(5):
                work = [drafts(batch) for _ in range(commits)]
                cpu = time.process_time()
                for one in work:
                    await store.publish(one)
                rounds.append((time.process_time() - cpu) * 1000 / (batch * commits))
            return statistics.median(rounds)
        finally:
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", default="1,4,16", help="drafts per transaction")
    ap.add_argument("--commits", type=int, default=300, help="transactions per round")
    ap.add_argument("--synchronous", default="OFF", help="SQLite synchronous (FULL: with fsync)")
    args = ap.parse_args()
    for batch in (int(b) for b in args.batches.split(",")):
        ms = asyncio.run(measure(batch, args.commits, args.synchronous))
        print(f"batch {batch:>3}: {ms:.3f} ms CPU per notification")


if __name__ == "__main__":
    main()
