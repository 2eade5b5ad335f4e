"""The long-poll storm, bounded before the route runs (issue #17; transports/http.py `Slots`): at
most `CLARION_MAX_HANDSHAKES` polls run in the app at once, the others wait as parsed heads, in
arrival order, and every one is answered."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion.transports.http import Slots
from harness.server import Server
from harness.services import node_database


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.search(rf"^{name}(?:_total)? (\S+)$", text, re.M)
    assert found, f"{name} is not exposed"
    return float(found.group(1))


class Transport:
    def __init__(self, closing: bool = False) -> None:
        self.closing = closing

    def is_closing(self) -> bool:
        return self.closing


class Proto:
    """What `Slots` asks of a protocol: its transport, and to start a request in a slot."""

    def __init__(self, name: str, started: list[str], closing: bool = False) -> None:
        self.name = name
        self.started = started
        self.transport = Transport(closing)

    def start_in_slot(self, cycle: Any, app: Any, slots: Slots) -> None:
        self.started.append(self.name)


def queue(slots: Slots, names: str, started: list[str], closing: str = "") -> dict[str, Any]:
    """Requests `names` arrive in order: those that get a slot start, the others wait."""
    protos = {}
    for name in names:
        proto = protos[name] = Proto(name, started, name in closing)
        if slots.take():
            started.append(name)
        else:
            slots.wait(proto, None, None)  # type: ignore[arg-type]
    return protos


@pytest.mark.parametrize(
    ("limit", "arrive", "gone", "closing", "leave", "expect"),
    [
        (2, "abcde", "", "", 3, "abcde"),  # in arrival order, as slots come back
        (2, "abcde", "c", "", 3, "abde"),  # a client that left never starts
        (2, "abcde", "", "d", 3, "abce"),  # nor one whose connection is closing
        (3, "ab", "", "", 2, "ab"),  # under the bound nothing waits
        (1, "abc", "", "", 1, "ab"),  # one slot back, one more starts
    ],
    ids=["fifo", "forgotten", "closing", "under-the-bound", "one-back-one-more"],
)
def test_slots_start_the_waiting_in_order(
    limit: int, arrive: str, gone: str, closing: str, leave: int, expect: str
) -> None:
    slots = Slots(limit)
    started: list[str] = []
    protos = queue(slots, arrive, started, closing)
    for name in gone:
        slots.forget(protos[name])  # type: ignore[arg-type]
    for _ in range(leave):
        slots.give_back()
    assert "".join(started) == expect
    assert slots.peak == min(limit, len(arrive))
    assert slots.busy <= limit and slots.busy == len(started) - leave


@pytest.mark.parametrize(
    ("scope", "covered"),
    [
        ({"method": "GET", "path": "/v1/poll"}, True),
        ({"method": "GET", "path": "/app/v1/poll", "root_path": "/app"}, True),
        ({"method": "POST", "path": "/v1/poll"}, False),
        ({"method": "GET", "path": "/v1/sse"}, False),
        ({"method": "GET", "path": "/v1/polls"}, False),
    ],
    ids=["poll", "poll-under-root-path", "post", "sse", "other-path"],
)
def test_slots_cover_long_polls_only(scope: dict[str, str], covered: bool) -> None:
    assert Slots(4).covers(scope) is covered


def test_a_poll_storm_runs_at_most_the_bound_in_the_app(tmp_path: Path) -> None:
    """200 polls at once through a real server with 4 slots: every one is answered 200, most
    waited their turn, and never more than 4 ran in the app at once."""
    polls, bound = 200, 4
    with node_database() as env:
        server = Server(tmp_path, {**env, "CLARION_MAX_HANDSHAKES": str(bound)}).start()
        try:

            async def storm() -> list[int]:
                limits = httpx.Limits(max_connections=polls, max_keepalive_connections=0)
                async with httpx.AsyncClient(limits=limits, timeout=60) as client:

                    async def one(i: int) -> int:
                        r = await client.get(
                            server.url + "/v1/poll",
                            params={"since": "e30", "timeout": 1},  # {}: from now on
                            headers=server.me(f"storm{i}"),
                        )
                        return r.status_code

                    return await asyncio.gather(*(one(i) for i in range(polls)))

            codes = asyncio.run(storm())
            assert codes == [200] * polls
            assert metric(server, "clarion_poll_slots_waited") > 0, "the burst never queued"
            assert 0 < metric(server, "clarion_poll_slots_peak") <= bound
            assert metric(server, "clarion_poll_slots_busy") == 0
            assert metric(server, "clarion_poll_slots_waiting") == 0
        finally:
            server.kill()
