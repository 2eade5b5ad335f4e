"""Presence: who is online, on which transports, and when each user was last seen.

Each node counts its own live sessions per user and transport in memory (a dict update when a
session starts or ends) and writes the counts that changed to the store in one batch about
once a second (store/presence.py says why the store and not the broker). The batch also tells
which users came online or went offline across the cluster, for the `user.connected` and
`user.disconnected` webhooks; a user who reconnects within one batch does neither.
"""

from __future__ import annotations

import math
import os
import socket
from collections import Counter
from collections.abc import Collection, Set
from datetime import datetime
from typing import Any

from clarion.domain import utcnow
from clarion.store.presence import PresenceStore


def come_and_go(
    touched: Collection[str], held: Set[str], open_: Set[str]
) -> tuple[list[str], list[str]]:
    """Whose `online` interval on this node opens and whose closes with this batch: of the
    users whose connections changed, those held now without an open interval, and those with
    one who are held no more. A user who left and came back within a batch writes nothing."""
    arrived = sorted(u for u in touched if u in held and u not in open_)
    departed = sorted(u for u in touched if u not in held and u in open_)
    return arrived, departed


def beat_due(last: datetime | None, now: datetime, every: float) -> bool:
    """Whether a node with nothing new to write should write its heartbeat now."""
    return last is None or (now - last).total_seconds() >= every


def idle_beat(stale: float, slack_beat: float) -> float:
    """How often a node with nothing new writes its heartbeat: its presence counts while the
    beat is under `stale` seconds old, and `when: offline` allows 3 beats of `slack_beat`
    (email.py, planner/escalate.py); a fifth of the first and at most one of the second leave
    room for late flushes."""
    return min(stale / 5, slack_beat)


def node_name() -> str:
    """This process, as its presence rows name it."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}"


class Presence:
    def __init__(self, store: PresenceStore, stale: float, slack_beat: float = math.inf) -> None:
        """`slack_beat`: the heartbeat `when: offline` counts its slack in (`idle_beat`)."""
        self.store = store
        self.stale = stale
        self.beat_every = idle_beat(stale, slack_beat)
        self.node = node_name()
        self.counts: Counter[tuple[str, str]] = Counter()
        self.held: Counter[str] = Counter()  # connections per user on this node
        self._open: set[str] = set()  # users with an open `online` row of this node
        self._dirty: set[tuple[str, str]] = set()
        self._begun = False
        self._beat_at: datetime | None = None  # when this node's heartbeat was last written

    def connected(self, user: str, via: str) -> None:
        self.counts[(user, via)] += 1
        self.held[user] += 1
        self._dirty.add((user, via))

    def disconnected(self, user: str, via: str) -> None:
        key = (user, via)
        self.counts[key] -= 1
        if self.counts[key] <= 0:
            del self.counts[key]
        self.held[user] -= 1
        if self.held[user] <= 0:
            del self.held[user]
        self._dirty.add(key)

    async def flush(self, now: datetime | None = None) -> tuple[list[str], list[str]]:
        """Write what changed and the heartbeat (run once: O(changes), never O(held));
        returns (came online, went offline) across the cluster. With nothing changed the
        heartbeat alone is written only every `beat_every` seconds (`idle_beat`): it was a
        write transaction a second on every idle node, most of what an idle node spent."""
        now = now or utcnow()
        if not self._dirty and not beat_due(self._beat_at, now, self.beat_every):
            return [], []
        if not self._begun:  # before this node's first beat
            await self.store.begin(self.node)
            self._begun = True
        dirty, self._dirty = self._dirty, set()
        changed = {k: self.counts.get(k, 0) for k in dirty}
        arrived, departed = come_and_go({u for u, _ in dirty}, self.held.keys(), self._open)
        try:
            out = await self.store.write(self.node, changed, now, self.stale, arrived, departed)
        except Exception:
            self._dirty |= dirty  # written with the next batch
            raise
        self._beat_at = now
        self._open.update(arrived)
        self._open.difference_update(departed)
        return out

    async def leave(self, now: datetime | None = None) -> None:
        await self.store.leave(self.node, now or utcnow())

    async def of(self, user: str, now: datetime | None = None) -> dict[str, Any]:
        now = now or utcnow()
        by, seen = await self.store.of(user, now, self.stale)
        total = sum(by.values())
        return {
            "user": user,
            "online": total > 0,
            "connections": total,
            "transports": by,
            "last_seen": now if total else seen,
        }
