"""uvicorn's httptools protocol with a bounded request head and a write timeout.

httptools accumulates a header's value across reads (`value += more`) and hands it over only
once complete, so without a bound one request can make the server hold megabytes of
`Authorization` (and copy them at each read). Here the bytes of an unfinished head are counted
as they arrive, and the finished head's size and header count are checked exactly; a request
over either limit is answered 431 and its connection closed, before any application code runs.

A client that stops reading (an SSE stream's, above all) makes the response wait on a full
socket buffer, holding what was queued for it. Once writing has been paused for
`CLARION_WRITE_TIMEOUT` seconds the connection is aborted: the stream's end frees everything,
and the client, if it is still there, reconnects with its cursor.

The limits are read from the environment once per process (`CLARION_*`, as the app does), so
the class is importable by name in worker processes.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

import orjson

from clarion.config import Settings
from clarion.transports.header_timeout import HeaderTimeoutProtocol

MAX_HEADERS = 100  # header lines per request; browsers send about 20


@functools.cache
def limits() -> tuple[int, float]:
    """(max head bytes, write timeout), from this process's settings."""
    settings = Settings()
    return settings.max_header_bytes, settings.write_timeout


class HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a refused request."""


class ClarionHttpProtocol(HeaderTimeoutProtocol):
    """Bounded heads and the write timeout, over the deadline on heads (slowloris)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_head, self.write_timeout = limits()
        self.stalled: asyncio.TimerHandle | None = None
        self.in_head = True  # the next bytes belong to a request head
        self.head_bytes = 0
        self.head_refused = False

    def data_received(self, data: bytes) -> None:
        if self.head_refused:
            return
        if self.in_head:
            self.head_bytes += len(data)
        super().data_received(data)
        if self.in_head and self.head_bytes > self.max_head and not self.head_refused:
            self._refuse()

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        if len(self.url) > self.max_head:
            self.head_refused = True
            raise HeadTooLarge

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if len(self.headers) > MAX_HEADERS or size > self.max_head:
            self.head_refused = True
            raise HeadTooLarge

    def on_headers_complete(self) -> None:
        self.in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.in_head, self.head_bytes = True, 0

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.stalled is None:
            self.stalled = self.loop.call_later(self.write_timeout, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._unstall()

    def connection_lost(self, exc: Exception | None) -> None:
        self._unstall()
        super().connection_lost(exc)

    def _unstall(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parser error, which is also where a callback's refusal ends."""
        if self.head_refused:
            self._refuse()
        else:
            super().send_400_response(msg)

    def _refuse(self) -> None:
        self.head_refused = True
        if self.transport.is_closing():
            return
        message = f"request headers over {self.max_head} bytes or {MAX_HEADERS} lines; send less"
        body = orjson.dumps(
            {"error": {"code": "headers_too_large", "message": message, "field": None}}
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body
        )
        self.transport.close()
