"""Writes corked per event-loop turn, for every detached connection (WebSocket and SSE).

A sink that gets a frame collects it and asks for one flush at the end of the loop's turn: on
loopback a `send()` costs about as much as the rest of a delivery, and under load many events
land in the same turn, so one write carries several frames. With no load there is one frame
per turn and nothing waits (the flush runs with `call_soon`).

Under sustained load one turn holds only the events of one group commit (with 4 publishes in
flight, at most ~4 frames a connection), so flushes are also spaced by `write_delay`
(`CLARION_WRITE_DELAY`): a flush comes at the earliest `write_delay` seconds after the previous
one ended, and the frames of the commits that land in between share one write per socket. A
notification after a quiet spell is written at once, so the delay costs latency only when the
process is already writing back to back (compare Centrifugo's `client.write_delay`, which holds
every connection's first frame). A connection being set up (`welcome`, its replay, `unread`)
is written at the end of its turn whatever the spacing (`at_once`): its frames are one burst
that one write carries anyway, and the spacing, meant for a stream of fan-out commits, held a
handshake up to `write_delay` behind the previous connection's writes (a sequential connect
took 8.5 ms from `auth` to `unread` at the client against 1.3 ms in the server).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import Protocol

WRITE_DELAY = 0.01  # seconds; the default of `CLARION_WRITE_DELAY` (docs/benchmarks.md)


class Corked(Protocol):
    def write_pending(self) -> None:
        """Write what was collected since the last flush, in one write."""


_corked: list[Corked] = []
_after: list[Callable[[], None]] = []
_delay = WRITE_DELAY
_last = -math.inf  # loop time at which the last flush ended


def set_write_delay(seconds: float) -> None:
    """The process's flush spacing (app.py sets it from the settings)."""
    global _delay
    _delay = max(0.0, seconds)


def flush_wait(now: float, last_flush: float, delay: float) -> float:
    """Seconds to hold the first frame corked now: none if the last flush is `delay` old."""
    return max(0.0, last_flush + delay - now)


def cork(sink: Corked, at_once: bool = False) -> None:
    """`sink.write_pending()` runs once, at the end of this turn of the loop, or when the
    spacing after the previous flush has passed; with `at_once`, at the end of this turn, on
    its own (what other sinks hold keeps its spacing)."""
    if at_once:
        asyncio.get_running_loop().call_soon(sink.write_pending)
        return
    _corked.append(sink)
    if len(_corked) == 1:
        loop = asyncio.get_running_loop()
        wait = flush_wait(loop.time(), _last, _delay)
        if wait > 0:
            loop.call_later(wait, _flush)
        else:
            loop.call_soon(_flush)


def after_write(callback: Callable[[], None]) -> None:
    """`callback()` runs once what is corked now has been written (at once if nothing is)."""
    if _corked:
        _after.append(callback)
    else:
        asyncio.get_running_loop().call_soon(callback)


def _flush() -> None:
    global _corked, _after, _last
    sinks, _corked = _corked, []
    callbacks, _after = _after, []
    for sink in sinks:
        sink.write_pending()
    _last = asyncio.get_running_loop().time()
    for callback in callbacks:
        callback()
