"""What the Python peers share: the benchmark payload, RSS, and the control routes.

POST /broadcast {"count": C, "size": S, "burst": B, "t": T?} broadcasts C payloads of about S
bytes, each stamped with its send time ``t`` in ms (or with the given T), and answers
{"sent": C, "clients": N, "ms": elapsed}. GET /stats answers {"rss": bytes, "clients": N}.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

PAGE = os.sysconf("SC_PAGE_SIZE")


def now_ms() -> float:
    return time.time() * 1000


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def payload(burst: int, seq: int, t: float, size: int) -> dict[str, Any]:
    obj: dict[str, Any] = {"type": "bench", "b": burst, "seq": seq, "t": t, "body": ""}
    pad = size - len(json.dumps(obj, separators=(",", ":")))
    obj["body"] = "x" * max(0, pad)
    return obj


def encode(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


Broadcast = Callable[[int, int, int, float | None], Awaitable[None]]


async def control(
    method: str, path: str, body: bytes, broadcast: Broadcast, clients: Callable[[], int]
) -> tuple[int, dict[str, Any]]:
    """Routes one control request; returns (status, JSON body)."""
    if method == "GET" and path == "/stats":
        return 200, {"rss": rss(), "clients": clients()}
    if method == "POST" and path == "/broadcast":
        spec = json.loads(body or b"{}")
        count = int(spec.get("count", 1))
        t0 = now_ms()
        await broadcast(count, int(spec.get("size", 100)), int(spec.get("burst", 0)), spec.get("t"))
        return 200, {"sent": count, "clients": clients(), "ms": now_ms() - t0}
    return 404, {"error": "not found"}
