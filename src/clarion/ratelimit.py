"""Rate limits per publisher key, per user and per client IP (the `limits` library).

Counters live in each process's memory: with N nodes a client can reach N times the limit,
which bounds abuse without a network round trip on every request. Fixed windows: one counter
per key and second, the cheapest strategy that still stops a flood.
"""

from __future__ import annotations

import math
import time

from limits import parse
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import FixedWindowRateLimiter

from clarion.config import Settings
from clarion.domain import ClarionError


class RateLimited(ClarionError):
    def __init__(self, what: str, retry_after: int) -> None:
        super().__init__(429, "rate_limited", f"too many requests for this {what}; slow down")
        self.retry_after = retry_after  # seconds until the window ends (`Retry-After`)


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.limiter = FixedWindowRateLimiter(MemoryStorage())
        self.rules = {
            "key": parse(settings.rate_limit_publish),
            "user": parse(settings.rate_limit_user),
            "ip": parse(settings.rate_limit_ip),
        }

    async def allow(self, kind: str, who: str, cost: int = 1) -> bool:
        return await self.limiter.hit(self.rules[kind], kind, who, cost=cost)

    async def check(self, kind: str, who: str, cost: int = 1) -> None:
        """Raise 429 when `who` is over its limit (`cost`: how many requests this one counts)."""
        if cost > 0 and not await self.allow(kind, who, cost):
            raise await self.refusal(kind, who)

    async def refusal(self, kind: str, who: str) -> RateLimited:
        """The 429 for `who`, with the seconds until its window ends."""
        stats = await self.limiter.get_window_stats(self.rules[kind], kind, who)
        wait = max(1, math.ceil(stats.reset_time - time.time()))
        return RateLimited({"key": "API key", "user": "user", "ip": "address"}[kind], wait)
