#!/usr/bin/env python3
"""In process, no sockets: CPU per delivery of the hub (`Session.deliver`) and a detached sink
(`RawSink` for WebSocket, `RawStream` for SSE) over a no-op transport, 5,000 sessions x 30
broadcasts to `all`, best of 5: what SSE costs beyond WebSocket per delivery, without the
noise of sockets and a shared machine. `PYTHONPATH=<checkout>/src python bench/sse_send_cpu.py`."""

import asyncio
import time
from types import SimpleNamespace

import clarion
from clarion.frames import Frame
from clarion.hub import Session
from clarion.transports.sse import RawStream
from clarion.transports.websocket import RawSink


class T:
    def write(self, d):
        pass

    def get_write_buffer_size(self):
        return 0

    def is_closing(self):
        return False

    def set_write_buffer_limits(self, high):
        pass


async def run(kind, n=5000, b=30, reps=5):
    node = SimpleNamespace(hub=None, settings=SimpleNamespace(max_buffer=1 << 20))
    best = []
    for _ in range(reps):
        sessions = []
        for i in range(n):
            if kind == "ws":
                raw = RawSink(SimpleNamespace(transport=T(), close_sent=False), 1 << 20)
            else:
                raw = RawStream(node)
                raw.transport = T()
            s = Session(f"u{i}", [f"user:u{i}", "all"], raw)
            s.position = {f"user:u{i}": 3, "all": 100}
            s.live = True
            s.backlog = None
            sessions.append((s, raw))
        t0 = time.process_time()
        for k in range(b):
            f = Frame(
                b'{"type":"notification","stream":"all","seq":%d,"notification":{"id":"x","title":"bench"}}'
                % (101 + k),
                "all",
                101 + k,
            )
            for s, _raw in sessions:
                s.deliver(f)
            for _s, raw in sessions:
                raw.write_pending()
        best.append(time.process_time() - t0)
    return min(best) / (n * b) * 1e6


async def main():
    for _ in range(2):
        w = await run("ws")
        s = await run("sse")
        print(f"{clarion.__file__}: ws {w:.2f} us, sse {s:.2f} us per delivery, sse-ws {s - w:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
