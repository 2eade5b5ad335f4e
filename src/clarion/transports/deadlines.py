"""Deadlines of held connections (a token's expiry, a long-poll's timeout): one timer per second
that has any, not one per connection.

A timer handle costs about 600 bytes per connection (the handle, its callback's arguments, the
loop's heap entry). Connections are instead kept in buckets by the second of their deadline,
and one timer per bucket serves them all: at 10,000 SSE streams with tokens minted over a
minute, some 60 timers. A deadline is met up to one second late, at most: a token is honoured
that much past its `exp`, a long-poll answers that much after its `timeout`.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol


class HasDeadline(Protocol):
    def deadline(self) -> None:
        """Its deadline has come."""


class Deadlines:
    def __init__(self) -> None:
        self.due: dict[int, set[HasDeadline]] = {}

    def add(self, conn: HasDeadline, at: float) -> int:
        """Calls `conn.deadline()` at `at` (wall clock); returns the bucket to `remove` it from."""
        second = math.ceil(at)
        bucket = self.due.get(second)
        if bucket is None:
            bucket = self.due[second] = set()
            delay = max(0.0, second - time.time())
            asyncio.get_running_loop().call_later(delay, self._fire, second)
        bucket.add(conn)
        return second

    def remove(self, conn: HasDeadline, second: int) -> None:
        bucket = self.due.get(second)
        if bucket is not None:
            bucket.discard(conn)

    def _fire(self, second: int) -> None:
        for conn in self.due.pop(second, ()):
            conn.deadline()


DEADLINES = Deadlines()  # this process's, for every transport
