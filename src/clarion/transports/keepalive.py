"""WebSocket keepalive: one timer wheel for every held socket, not a timer per socket.

uvicorn pings each connection from its own timers (a ping timer, then a pong timer, a random
payload and a sans-I/O round per ping). Held connections then cost timer-heap work all the
time, and a connect storm competes with it: at 19,500 connections a 25 s heartbeat is 780
pings/s (docs/benchmarks.md). Here sockets sit in one of `slots` buckets, and one timer visits
one bucket per tick, so each socket is pinged once per `interval`: adding a socket is a set
insert, a ping is one constant write (a server frame is unmasked, so the same two bytes serve
every socket), and a socket that sent nothing since its last ping (no pong, no frame) within
one interval is closed with 1011.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

PING = b"\x89\x00"  # FIN + ping opcode, unmasked, empty payload


class Pingable(Protocol):
    """What the wheel needs of a connection (transports/protocol.py)."""

    heard: bool  # set by the protocol whenever the peer sends anything
    pinged: bool
    slot: set[Pingable] | None  # the wheel's bucket it sits in

    def ping(self, frame: bytes) -> None: ...

    def close_detached(self, code: int, reason: str) -> None: ...


class Keepalive:
    def __init__(self, interval: float, slots: int = 25) -> None:
        self.interval = interval
        self.wheel: list[set[Pingable]] = [set() for _ in range(max(1, slots))]
        self.turn = 0
        self.timer: asyncio.TimerHandle | None = None

    def add(self, conn: Pingable) -> None:
        """Held from now on; its first ping comes about one interval later."""
        if self.interval <= 0:
            return
        conn.heard, conn.pinged = False, False
        conn.slot = self.wheel[self.turn - 1]  # the bucket visited last: a whole round away
        conn.slot.add(conn)
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self._tick_seconds(), self.tick)

    def remove(self, conn: Pingable) -> None:
        if conn.slot is not None:
            conn.slot.discard(conn)
            conn.slot = None

    def tick(self) -> None:
        """Ping one bucket: close the sockets silent since their last ping, ping the others."""
        bucket = self.wheel[self.turn]
        self.turn = (self.turn + 1) % len(self.wheel)
        dead = []
        for conn in bucket:
            if conn.pinged and not conn.heard:
                dead.append(conn)
                continue
            conn.heard, conn.pinged = False, True
            conn.ping(PING)
        for conn in dead:
            self.remove(conn)
            conn.close_detached(1011, "keepalive ping timeout")
        if any(self.wheel):
            self.timer = asyncio.get_running_loop().call_later(self._tick_seconds(), self.tick)
        else:
            self.timer = None

    def _tick_seconds(self) -> float:
        return self.interval / len(self.wheel)
