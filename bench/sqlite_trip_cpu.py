"""Process CPU of one trip to the SQLite store's threads, in-process: what every snapshot batch,
inbox call and group commit pays before its statements do any work.

A trip is `Database.read()` + `Database.run` (a read of one row), or `Database.transact` (a write
transaction of one statement), on a fresh SQLite file with `synchronous=OFF` (no fsync in the
figure). Process CPU (all threads: the event loop's and aiosqlite's), median of `--rounds`,
each of `--trips` trips, 8 reads at a time as a storm's snapshot batches come. Run it with each
checkout (the other by PYTHONPATH), alternating, pinned to one core:

    taskset -c 0 .venv/bin/python bench/sqlite_trip_cpu.py
    PYTHONPATH=<main>/src taskset -c 0 .venv/bin/python bench/sqlite_trip_cpu.py
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from sqlalchemy import Connection, insert, select

from clarion.store.db import Database
from clarion.store.schema import streams


def _seq(conn: Connection) -> int | None:
    return conn.execute(select(streams.c.seq).where(streams.c.name == "trip")).scalar()


async def measure(trips: int, rounds: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'trip.db'}", sqlite_synchronous="OFF")
        await db.connect()
        await db.transact(lambda c: c.execute(insert(streams).values(name="trip", seq=1)))

        async def read() -> int | None:
            async with db.read() as conn:
                return await db.run(conn, _seq)

        async def reads() -> None:
            for _ in range(trips // 8):
                await asyncio.gather(*(read() for _ in range(8)))

        async def transacts() -> None:
            for _ in range(trips):
                await db.transact(_seq)

        out: dict[str, list[float]] = {"read": [], "transact": []}
        await reads()  # warm: every reader open, every statement compiled
        for _ in range(rounds):
            for name, run in (("read", reads), ("transact", transacts)):
                start = time.process_time()
                await run()
                out[name].append((time.process_time() - start) / trips * 1e6)
        await db.close()
    return {name: statistics.median(values) for name, values in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trips", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=5)
    cfg = ap.parse_args()
    got = asyncio.run(measure(cfg.trips, cfg.rounds))
    print(" ".join(f"{name} {us:.1f} us CPU a trip" for name, us in got.items()))


if __name__ == "__main__":
    main()
