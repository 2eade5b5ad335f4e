#!/usr/bin/env python3
"""The delivery log on the fan-out hot path, in one process: the hub's dispatch with and
without the `delivered` hook, and what the background batch costs per logged row; also the
hub's dispatch of events that carry their acceptance time (publish-to-socket timing, hub.py)
against the same events without it.

    python bench/delivery_hotpath.py            # 2,000 personal + 2,000 `all` sessions

No sockets and no server: sessions with sinks that accept every frame, so what is timed is the
hub's own work per delivery (where the hook runs) and nothing else. Each figure is the best of
`--reps` interleaved repetitions (the least disturbed by other work on the machine); the report
gives ns per delivery with and without the hook and their ratio, and with the timing and its
ratio to without (the hook off in both). The batch is timed on a real
store (SQLite, a temporary file): µs per `delivered` row written, off the hot path.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from clarion.broker.memory import MemoryBroker
from clarion.control import Control
from clarion.deliveries import Recorder
from clarion.domain import Meta, StoredEvent
from clarion.events import notification_doc, notification_event
from clarion.frames import Frame
from clarion.hub import Hub, Session, _Stream
from clarion.ids import new_id
from clarion.store import SQLStore
from clarion.store.deliveries import record


class Sink:
    via = "websocket"

    def send(self, frame: Frame, session: Session) -> bool:
        return True

    async def drain(self) -> None:
        return None

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        return None


class NoStore:
    """The hub reads nothing here: every frame is dispatched in order."""

    async def snapshots(self, wanted: list[Any]) -> list[Any]:
        return []


class Observer:
    """Control's dispatch hook alone (its recorder), as the node wires it."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self._personal = self.recorder.personal

    dispatched = Control.dispatched


def frame(stream: str, seq: int) -> Frame:
    doc = notification_doc(new_id(), None, type="t", priority="normal", title="hello")
    return Frame.event(
        StoredEvent(stream, seq, notification_event(stream, seq, doc), Meta("notification", "t"))
    )


def timed(work: list[tuple[_Stream, Frame]]) -> list[tuple[_Stream, Frame]]:
    """The same events, each with an acceptance time: the hub times them to the socket."""
    out = []
    for st, f in work:
        g = Frame(f.body, f.stream, f.seq)
        g.ntype, g.accepted = f.ntype, time.time()
        out.append((st, g))
    return out


def build(users: int) -> tuple[Hub, list[tuple[_Stream, Frame]], list[tuple[_Stream, Frame]]]:
    hub = Hub(store=NoStore(), broker=MemoryBroker())  # type: ignore[arg-type]
    personal, shared = [], []
    everyone = _Stream()
    everyone.head = 0
    hub.streams["all"] = everyone
    for i in range(users):
        name = f"user:u{i}"
        st = _Stream()
        st.head = 0
        s = Session(f"u{i}", [name, "all"], Sink())
        s.live = True
        st.sessions.add(s)
        everyone.sessions.add(s)
        hub.streams[name] = st
        personal.append((st, frame(name, 1)))
    shared = [(everyone, frame("all", n)) for n in range(1, 51)]
    return hub, personal, shared


def run_once(hub: Hub, work: list[tuple[_Stream, Frame]]) -> float:
    for st, f in work:  # rewind, so every frame is new to every session
        st.head = f.seq - 1
        for s in st.sessions:
            s.position[f.stream] = f.seq - 1
    t0 = time.perf_counter()
    for st, f in work:
        hub._dispatch(st, f)
    return time.perf_counter() - t0


async def batch_cost(rows: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLStore(f"sqlite:///{Path(tmp) / 'b.db'}")
        await store.connect()
        try:
            now = datetime.now(UTC)
            values = [
                (new_id(), f"u{i}", "in_app", "delivered", now, "websocket") for i in range(rows)
            ]
            t0 = time.perf_counter()
            async with store.db.write() as conn:
                await record(store.db, conn, values)
            return time.perf_counter() - t0
        finally:
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()
    hub, personal, shared = build(args.users)
    works = {"personal": personal, "all": shared}
    works_timed = {"personal": timed(personal), "all": timed(shared)}
    observer: Any = Observer()
    best: dict[tuple[str, str], float] = {}
    for _ in range(args.reps):
        for variant in ("without", "with", "timed"):
            hub.on_dispatch = observer.dispatched if variant == "with" else None
            for name in works:
                work = works_timed[name] if variant == "timed" else works[name]
                took = run_once(hub, work)
                best[(name, variant)] = min(best.get((name, variant), took), took)
                await asyncio.sleep(0)  # the hub's samples are taken after the turn (untimed)
            observer.recorder.take()
    print(
        f"{'dispatch':10} {'deliveries':>10} {'ns/delivery without':>20} {'with':>8} {'ratio':>6}"
        f" {'timed':>8} {'ratio':>6}"
    )
    for name, work in works.items():
        n = sum(len(st.sessions) for st, _ in work)
        off, on_, tm = (best[(name, v)] * 1e9 / n for v in ("without", "with", "timed"))
        print(f"{name:10} {n:10} {off:20.0f} {on_:8.0f} {on_ / off:6.3f} {tm:8.0f} {tm / off:6.3f}")
    samples = sum(hub.socket_latency.counts["socket"])
    print(f"publish-to-socket samples taken: {samples} (one per timed event)")
    rows = 10_000
    took = await batch_cost(rows)
    print(f"background batch: {took * 1e6 / rows:.1f} µs per delivered row ({rows} rows, SQLite)")


if __name__ == "__main__":
    asyncio.run(main())
