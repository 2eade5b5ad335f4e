"""The corked socket writes (transports/cork.py): one write per socket per loop turn, and under
back-to-back load at most one flush per `write_delay`, so the frames of commits that land close
together share a write (issue #17: fan-out at 4 publishes in flight)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import AsyncIterator, Iterator
from types import SimpleNamespace

import pytest

from clarion.transports import cork
from clarion.transports.cork import WRITE_DELAY, after_write, flush_wait, set_write_delay


class SocketSink:
    """A corked sink over a real socket pair, as RawSink writes: each flush is one
    `transport.write` of what was collected; `writes` keeps the frames of each."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.pending: list[bytes] | None = None
        self.writes: list[list[bytes]] = []

    def send(self, frame: bytes) -> None:
        if self.pending is not None:
            self.pending.append(frame)
            return
        self.pending = [frame]
        cork.cork(self)

    def write_pending(self) -> None:
        pending, self.pending = self.pending, None
        if pending:
            self.transport.write(b"".join(pending))
            self.writes.append(pending)


@pytest.fixture
async def sink() -> AsyncIterator[tuple[SocketSink, socket.socket]]:
    ours, theirs = socket.socketpair()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, ours)
    try:
        yield SocketSink(transport), theirs  # type: ignore[arg-type]
    finally:
        transport.close()
        theirs.close()


@pytest.fixture(autouse=True)
def default_delay() -> Iterator[None]:
    yield
    set_write_delay(WRITE_DELAY)
    # A flush a test left scheduled dies with its loop: what it held must not stay corked.
    cork._corked.clear()
    cork._after.clear()
    cork._last = -math.inf


def test_flush_wait_holds_only_while_flushes_come_back_to_back() -> None:
    assert flush_wait(now=10.0, last_flush=9.0, delay=0.01) == 0.0  # quiet: at once
    assert flush_wait(now=10.0, last_flush=9.995, delay=0.01) == pytest.approx(0.005)
    assert flush_wait(now=10.0, last_flush=9.995, delay=0.0) == 0.0  # 0: every turn


async def _commits_in_a_row(sink: SocketSink, spacing: float) -> None:
    """Three "commits" in three loop turns: the first after a quiet spell, two more soon after."""
    sink.send(b"a")
    await asyncio.sleep(0)  # the end of the turn: "a" is written at once
    await asyncio.sleep(0)
    sink.send(b"b")
    await asyncio.sleep(spacing)
    sink.send(b"c")
    await asyncio.sleep(0.3)


async def test_frames_of_commits_close_together_share_one_write(
    sink: tuple[SocketSink, socket.socket],
) -> None:
    s, peer = sink
    set_write_delay(0.1)
    await asyncio.sleep(0.15)  # no flush in the last delay (an earlier test's)
    await _commits_in_a_row(s, 0.02)
    assert s.writes == [[b"a"], [b"b", b"c"]]
    assert peer.recv(16) == b"abc"


async def test_without_a_delay_each_turn_writes(sink: tuple[SocketSink, socket.socket]) -> None:
    s, _ = sink
    set_write_delay(0.0)
    await _commits_in_a_row(s, 0.02)
    assert s.writes == [[b"a"], [b"b"], [b"c"]]


async def test_after_write_runs_once_the_held_frames_went_out(
    sink: tuple[SocketSink, socket.socket],
) -> None:
    """The hub's socket latency is taken here, so it must include the time a frame was held."""
    s, _ = sink
    set_write_delay(0.1)
    await asyncio.sleep(0.15)
    s.send(b"a")
    await asyncio.sleep(0.01)
    s.send(b"b")  # held: a flush ended less than 0.1 s ago
    written: list[int] = []
    after_write(lambda: written.append(len(s.writes)))
    await asyncio.sleep(0.05)
    assert written == []
    await asyncio.sleep(0.1)
    assert written == [2]


class _Proto:
    """What RawSink reads of its WebSocket protocol: the transport and whether it closed."""

    def __init__(self, transport: asyncio.WriteTransport) -> None:
        self.transport = transport
        self.close_sent = False


async def test_a_held_flush_never_holds_more_than_the_buffer_limit(
    sink: tuple[SocketSink, socket.socket],
) -> None:
    """Under a spaced flush a connection's frames wait in `pending`; past `CLARION_MAX_BUFFER`
    they go to the transport at once, where the slow-consumer rule sees them."""
    from clarion.frames import Frame
    from clarion.transports.websocket import RawSink

    s, peer = sink
    set_write_delay(0.5)
    raw = RawSink(_Proto(s.transport), limit=4096)
    frames = [Frame(b"x" * 1000, "all", seq) for seq in range(1, 9)]
    live = SimpleNamespace(live=True)  # a live session's frames: the spaced flush
    raw.send(frames[0], live)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # written at once: no flush before it
    for frame in frames[1:]:
        raw.send(frame, live)  # type: ignore[arg-type]
    assert raw.pending is None or sum(map(len, raw.pending)) <= 4096
    await asyncio.sleep(0.05)  # still inside the spacing, yet most went out
    received = b""
    peer.setblocking(False)
    with contextlib.suppress(BlockingIOError):
        while chunk := peer.recv(65536):
            received += chunk
    assert len(received) >= 5 * 1002


async def test_a_connection_being_set_up_is_written_in_its_turn(
    sink: tuple[SocketSink, socket.socket],
) -> None:
    """`welcome`, the replay and `unread` go out at the end of their turn even while the
    spacing holds the frames of live connections (a handshake is one burst, one write)."""
    from clarion.frames import Frame
    from clarion.transports.websocket import RawSink

    s, peer = sink
    set_write_delay(0.5)
    s.send(b"a")
    await asyncio.sleep(0)
    await asyncio.sleep(0)  # a flush just ended: the spacing holds the next 0.5 s
    s.send(b"b")  # a live connection's frame: held
    raw = RawSink(_Proto(s.transport), limit=1 << 20)
    setting_up = SimpleNamespace(live=False)
    raw.send(Frame(b"welcome"), setting_up)  # type: ignore[arg-type]
    raw.send(Frame(b"unread"), setting_up)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    peer.setblocking(False)
    assert peer.recv(65536) == b"a" + Frame(b"welcome").ws + Frame(b"unread").ws
    assert s.writes == [[b"a"]]  # "b" still waits for the spacing
    await asyncio.sleep(0.6)
    assert s.writes == [[b"a"], [b"b"]]
