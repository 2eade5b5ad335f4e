"""Token expiry for held connections: one timer per second that has any, not one per connection.

A timer handle costs about 600 bytes per connection (the handle, its callback's arguments, the
loop's heap entry). Connections are instead kept in buckets by the second their token ends,
and one timer per bucket ends them all: at 10,000 connections with tokens minted over a minute,
some 60 timers. A token is honoured up to one second past its `exp`, at most.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Protocol


class Expiring(Protocol):
    def expire(self) -> None:
        """The token ended: close with its reason."""


class Expiries:
    def __init__(self) -> None:
        self.due: dict[int, set[Expiring]] = {}

    def add(self, conn: Expiring, expires_at: float) -> int:
        """Ends `conn` at `expires_at` (wall clock); returns the bucket to `remove` it from."""
        second = math.ceil(expires_at)
        bucket = self.due.get(second)
        if bucket is None:
            bucket = self.due[second] = set()
            delay = max(0.0, second - time.time())
            asyncio.get_running_loop().call_later(delay, self._fire, second)
        bucket.add(conn)
        return second

    def remove(self, conn: Expiring, second: int) -> None:
        bucket = self.due.get(second)
        if bucket is not None:
            bucket.discard(conn)

    def _fire(self, second: int) -> None:
        for conn in self.due.pop(second, ()):
            conn.expire()
