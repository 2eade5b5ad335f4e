"""Small helpers every test module shares: ids, ports, publishing, and bounded polling."""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from harness.server import Server


def user_id() -> str:
    """A user no other test (or earlier run on the same database) has seen."""
    return "u-" + secrets.token_hex(6)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def send(server: Server, **body: Any) -> str:
    """Publish through the API, expect 201, and return the notification's id."""
    r = server.publish(**body)
    assert r.status_code == 201, r.text
    notification_id: str = r.json()["id"]
    return notification_id


def eventually(
    predicate: Callable[[], object],
    timeout: float = 10,
    what: str = "the condition",
    interval: float = 0.02,
) -> None:
    """Poll `predicate` until it is true; fail naming `what` once `timeout` seconds pass.
    Things that happen in another process (or thread) have no event to wait on."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(interval)


async def eventually_async(
    predicate: Callable[[], object],
    timeout: float = 10,  # noqa: ASYNC109 (the predicate is polled, not awaited)
    what: str = "the condition",
    interval: float = 0.02,
) -> None:
    """`eventually` inside an event loop: yields to the loop between checks, so the tasks that
    make the predicate true get to run (`interval=0` just lets spawned tasks take turns)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        await asyncio.sleep(interval)
