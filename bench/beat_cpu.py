"""Process CPU a node spends on its presence heartbeat while it holds N users, in-process.

Issue #10 item 4: at 19,500 connections a handshake cost twice what it did at 5,000, and the
node's periodic writes grew with what it held. This measures one steady second of a node that
holds `n` users and sees no one come or go: the presence batch (every
`CLARION_PRESENCE_INTERVAL`, 1 s) and a fifth of the `online` heartbeat / housekeeping (every
`CLARION_ONLINE_INTERVAL`, 5 s), on a fresh SQLite file. Run it with each checkout (`main` by
PYTHONPATH), alternating; the figure is process CPU (all threads), median of `--rounds`.

    .venv/bin/python bench/beat_cpu.py --held 5000,19500
    PYTHONPATH=<main>/src .venv/bin/python bench/beat_cpu.py --held 5000,19500
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta

from clarion.presence import Presence
from clarion.store.sql import SQLStore

ONLINE_EVERY = 5  # presence batches per online heartbeat (5 s / 1 s)


async def steady_second(n: int, rounds: int) -> float:
    """Median CPU ms of one second of beating with `n` users held and nothing changing."""
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLStore(f"sqlite:///{tmp}/beat.db")
        await store.connect()
        try:
            presence = Presence(store.presence, 15)
            users = [f"user-{i}" for i in range(n)]
            for u in users:
                presence.connected(u, "websocket")
            t = datetime.now(UTC)
            await presence.flush(t)  # the users come: written once, not measured
            per_user = "users" in inspect.signature(store.beat).parameters  # `main`'s beat
            flushes, beats = [], []
            for i in range(rounds):
                t += timedelta(seconds=1)
                c0 = time.process_time()
                await presence.flush(t)
                c1 = time.process_time()
                if per_user:
                    await store.beat(users, t, 5.0)  # type: ignore[call-arg]
                else:
                    await store.beat(t)  # type: ignore[call-arg]
                c2 = time.process_time()
                flushes.append(c1 - c0)
                beats.append(c2 - c1)
                del i
            flush, beat = statistics.median(flushes), statistics.median(beats)
            return 1000 * (flush + beat / ONLINE_EVERY)
        finally:
            await store.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--held", default="10,1000,5000,19500", help="users held, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    cfg = ap.parse_args()
    for n in (int(x) for x in cfg.held.split(",")):
        ms = asyncio.run(steady_second(n, cfg.rounds))
        print(f"held {n:>6,}: {ms:8.2f} ms of CPU per second of heartbeats")


if __name__ == "__main__":
    main()
