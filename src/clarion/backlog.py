"""Outbox backlogs (push, email, webhooks): rows due and how long the oldest has waited.

Read from the outboxes' `due_at` indexes (store/lookup.py), and at most once every
`REFRESH` seconds however many scrapes and open consoles ask: a console polls every second
on each node it reaches, and a count on a large backlog is an index range scan worth sharing.
"""

from __future__ import annotations

import asyncio
import time

from clarion.domain import utcnow
from clarion.store.lookup import Lookup, OutboxStats

REFRESH = 5.0  # seconds a reading is served before the store is asked again


class Backlogs:
    def __init__(self, lookup: Lookup, refresh: float = REFRESH) -> None:
        self.lookup = lookup
        self.refresh = refresh
        self.last: dict[str, OutboxStats] | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def read(self) -> dict[str, OutboxStats] | None:
        """By outbox name; None when the store does not answer (the node's own counters are
        still worth a scrape)."""
        async with self._lock:  # callers waiting behind one read share its result
            if time.monotonic() - self._at < self.refresh:
                return self.last
            try:
                self.last = await self.lookup.outboxes(utcnow())
            except Exception:
                self.last = None
            self._at = time.monotonic()
            return self.last
