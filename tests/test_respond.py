"""`respond` (transports/http.py) writes a whole response in one write, byte for byte what
uvicorn's cycle writes for the `http.response.start` and `http.response.body` messages, and
leaves the cycle as uvicorn's `send` would."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from clarion.transports.http import respond

DEFAULT = [(b"date", b"Mon, 30 Nov 2026 22:00:00 GMT"), (b"server", b"uvicorn")]
BODY = b'{"id":"x","recipients":1}'
ADDED = [(b"x-content-type-options", b"nosniff"), (b"vary", b"Origin"), (b"x-request-id", b"ab")]


class Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def cycle(keep_alive: bool, *, access_log: bool = False) -> tuple[RequestResponseCycle, Any]:
    transport = Transport()
    done: list[bool] = []
    log = logging.getLogger("test")
    c = RequestResponseCycle(
        scope={
            "method": "POST",
            "path": "/v1/notifications",
            "query_string": b"",
            "headers": [],
            "type": "http",
            "client": ("127.0.0.1", 1),
            "http_version": "1.1",
        },
        transport=transport,
        flow=FlowControl(transport),
        logger=log,
        access_logger=log,
        access_log=access_log,
        default_headers=DEFAULT,
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: done.append(True),
    )
    return c, (transport, done)


def state(c: RequestResponseCycle) -> tuple[Any, ...]:
    return (
        c.response_started,
        c.response_complete,
        c.keep_alive,
        c.message_event.is_set(),
        c.expected_content_length,
    )


CASES = {
    "201-keep-alive": (
        201,
        [(b"content-length", b"25"), (b"content-type", b"application/json")],
        True,
    ),
    "201-close": (201, [(b"content-length", b"25"), (b"content-type", b"application/json")], False),
    "429-retry-after": (429, [(b"content-length", b"25"), (b"Retry-After", b"7")], True),
}


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
async def test_one_write_of_what_uvicorn_writes_in_two(name: str) -> None:
    status, headers, keep_alive = CASES[name]
    headers = [*headers, *ADDED]
    theirs, (their_transport, their_done) = cycle(keep_alive)
    await theirs.send({"type": "http.response.start", "status": status, "headers": headers})
    await theirs.send({"type": "http.response.body", "body": BODY})
    ours, (our_transport, our_done) = cycle(keep_alive)
    await respond(ours.send, status, headers, BODY)
    assert len(their_transport.writes) == 2
    assert our_transport.writes == [b"".join(their_transport.writes)]
    assert state(ours) == state(theirs)
    assert (our_transport.closed, our_done) == (their_transport.closed, their_done)
    assert our_done == [True] and our_transport.closed is not keep_alive


async def test_a_response_uvicorn_would_refuse_is_refused() -> None:
    ours, (transport, _) = cycle(True)
    bad = [(b"content-length", b"25"), (b"x-bad", b"a\r\nset-cookie: b")]
    with pytest.raises(RuntimeError):
        await respond(ours.send, 201, bad, BODY)
    assert transport.writes == []


async def test_other_shapes_go_through_uvicorns_send() -> None:
    """No Content-Length (chunked), or uvicorn's own access log on: the two messages."""
    for headers, access_log in (([(b"content-type", b"text/plain")], False), (ADDED, True)):
        sized = headers if not access_log else [(b"content-length", b"25"), *headers]
        ours, (transport, done) = cycle(True, access_log=access_log)
        await respond(ours.send, 200, sized, BODY)
        assert len(transport.writes) == 2 and done == [True]
