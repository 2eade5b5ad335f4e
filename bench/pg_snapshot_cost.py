#!/usr/bin/env python3
"""What one snapshot per count costs on PostgreSQL: the unread count and a mark read, timed
with this code's `Database.consistent` / `transact(snapshot=True)` (REPEATABLE READ) and with
the per-statement reads and READ COMMITTED writes they replaced, alternating in one process.

    python bench/pg_snapshot_cost.py                      # a fresh database on 127.0.0.1:5432
    python bench/pg_snapshot_cost.py --rounds 10 --calls 500

One user with 1,000 personal notifications; per round and mode, `--calls` unread counts and
`--calls`/2 marks (read, then unread the next round). Prints ms per call, per round and median.
Wall clock over loopback: compare the two modes of one run, not runs of different days.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore
from harness.services import postgres_database


def _draft(user: str) -> Draft:
    nid, at = new_id(), datetime.now(UTC)
    doc = notification_doc(nid, iso(at), type="message", priority="normal", title=nid)
    return Draft(nid, "message", "normal", doc, at, users=[user])


async def measure(url: str, rounds: int, calls: int) -> dict[str, dict[str, list[float]]]:
    store = SQLStore(url)
    await store.connect()
    user = f"u-{secrets.token_hex(3)}"
    ids: list[str] = []
    for _ in range(20):
        ids += [p.id for p in await store.publish([_draft(user) for _ in range(50)])]
    db = store.db
    snapshot_read, plain_read, transact = db.consistent, db.read, db.transact

    async def per_statement_transact(fn: Callable[[Any], Any], *, snapshot: bool = False) -> Any:
        return await transact(fn)

    modes: dict[str, tuple[Any, Any]] = {
        "one snapshot": (snapshot_read, transact),
        "per statement": (plain_read, per_statement_transact),
    }
    out: dict[str, dict[str, list[float]]] = {m: {"count": [], "mark": []} for m in modes}
    try:
        for r in range(rounds):
            for mode, (read, write) in modes.items():
                db.consistent, db.transact = read, write
                t0 = time.perf_counter()
                for _ in range(calls):
                    await store.unread_count(user)
                out[mode]["count"].append((time.perf_counter() - t0) / calls * 1000)
                t0 = time.perf_counter()
                change = "read" if r % 2 == 0 else "unread"
                for id in ids[: calls // 2]:
                    await store.change_state(user, change, id)
                out[mode]["mark"].append((time.perf_counter() - t0) / (calls // 2) * 1000)
    finally:
        await store.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--calls", type=int, default=200)
    cfg = ap.parse_args()
    with postgres_database() as url:
        out = asyncio.run(measure(url, cfg.rounds, cfg.calls))
    for mode, got in out.items():
        for op, ms in got.items():
            rounds = ", ".join(f"{x:.3f}" for x in ms)
            print(f"{mode:14} {op:5} ms per call: {rounds}; median {statistics.median(ms):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
