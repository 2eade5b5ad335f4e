"""Process CPU per durable notification in `SQLStore.publish`, in-process (no HTTP, no loopback).

A busy machine hardly changes the CPU a publish consumes (it stretches wall time), so this
compares the store's publish path of two codes on a shared machine (issue #11): run it with
each checkout's venv, alternating. Four shapes, on a fresh SQLite file: one notification to one
user per publish, one to 100 users, 100 one-user notifications in one publish (the batch
API's), and 1-8 one-user notifications (a group commit of single requests). The figure is the
process CPU (all threads, the kernel's fsync work included) divided by the notifications.

    <checkout>/.venv/bin/python bench/publish_cpu.py [--rounds 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from clarion.ids import new_id
from clarion.store.sql import SQLStore

try:
    from clarion.domain import Draft
except ImportError:  # the code before the store split (1abce1a)
    from clarion.store.base import Draft


def draft(users: list[str]) -> Any:
    doc = b'{"title":"x"}'
    return Draft(new_id(), "message", "normal", doc, datetime.now(UTC), users=users)


async def shape(store: SQLStore, make: Callable[[int], list[Any]], rounds: int) -> float:
    """Microseconds of process CPU per notification over `rounds` publishes."""
    t0, n = time.process_time(), 0
    for i in range(rounds):
        drafts = make(i)
        await store.publish(drafts)
        n += len(drafts)
    return (time.process_time() - t0) / n * 1e6


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLStore(f"sqlite:///{tmp}/clarion.db")
        await store.connect()
        shapes: dict[str, tuple[Callable[[int], list[Any]], int]] = {
            "1 per publish": (lambda i: [draft([f"u{i % 500}"])], rounds),
            "100 users": (
                lambda i: [draft([f"u{j}" for j in range(i % 7, 700, 7)])],
                rounds // 5,
            ),
            "batch of 100": (
                lambda i: [draft([f"u{(i * 100 + j) % 1000}"]) for j in range(100)],
                rounds // 10,
            ),
            "1-8 per publish": (
                lambda i: [draft([f"u{(i * 8 + j) % 1000}"]) for j in range(1 + i % 8)],
                rounds // 2,
            ),
        }
        try:
            for label, (make, n) in shapes.items():
                print(f"{label:16s} {await shape(store, make, n):8.0f} us CPU per notification")
        finally:
            await store.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=1000, help="publishes of one notification")
    asyncio.run(main(ap.parse_args().rounds))
