"""Writes corked per event-loop turn, for every detached connection (WebSocket and SSE).

A sink that gets a frame collects it and asks for one flush at the end of the loop's turn: on
loopback a `send()` costs about as much as the rest of a delivery, and under load many events
land in the same turn, so one write carries several frames. With no load there is one frame
per turn and nothing waits (the flush runs with `call_soon`).
"""

from __future__ import annotations

import asyncio
from typing import Protocol


class Corked(Protocol):
    def write_pending(self) -> None:
        """Write what was collected since the last flush, in one write."""


_corked: list[Corked] = []


def cork(sink: Corked) -> None:
    """`sink.write_pending()` runs once, at the end of this turn of the loop."""
    _corked.append(sink)
    if len(_corked) == 1:
        asyncio.get_running_loop().call_soon(_flush)


def _flush() -> None:
    global _corked
    sinks, _corked = _corked, []
    for sink in sinks:
        sink.write_pending()
