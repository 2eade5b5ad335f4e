"""uvicorn's httptools protocol with a deadline on request heads (slowloris).

uvicorn times out idle keep-alive connections, but a client that sends a request head a byte
at a time (or stops halfway) holds its connection, buffers and file descriptor forever. Each
request head must be complete within `CLARION_HEADER_TIMEOUT` seconds of its first byte (of
the connection, for the first request); otherwise the connection is closed without an answer.
A WebSocket upgrade is an HTTP request head too, so the deadline covers it. One timer per
request head in flight, cancelled when the head is complete.
"""

from __future__ import annotations

import asyncio
from functools import cache

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from clarion.config import Settings


@cache
def header_timeout() -> float:
    """Read once per process (worker processes build their settings from the environment)."""
    return Settings().header_timeout


class HeaderTimeoutProtocol(HttpToolsProtocol):
    head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._start_head_timer()

    def on_headers_complete(self) -> None:
        self._stop_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        if self.head_timer is None and header_timeout() > 0:
            self.head_timer = self.loop.call_later(header_timeout(), self._head_timed_out)

    def _stop_head_timer(self) -> None:
        if self.head_timer is not None:
            self.head_timer.cancel()
            self.head_timer = None

    def _head_timed_out(self) -> None:
        self.head_timer = None
        self.transport.close()
