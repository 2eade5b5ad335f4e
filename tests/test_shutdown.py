"""SIGTERM: live streams end at once with "reconnect elsewhere", and the process exits."""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from harness.server import Server
from harness.util import user_id


def test_sigterm_ends_live_connections_and_exits_promptly(fresh_server: Server) -> None:
    server = fresh_server.start()
    u = user_id()
    live = server.connect(u)
    live.until("unread")
    h = server.me(u)
    cursor = httpx.get(server.url + "/v1/poll", headers=h).json()["cursor"]
    results: dict[str, Any] = {}

    def long_poll() -> None:
        results["poll"] = httpx.get(
            server.url + "/v1/poll", params={"since": cursor, "timeout": 30}, headers=h, timeout=40
        ).status_code

    def sse() -> None:
        with httpx.stream("GET", server.url + "/v1/sse", headers=h, timeout=40) as resp:
            for _ in resp.iter_lines():
                pass
        results["sse"] = "ended"

    threads = [threading.Thread(target=long_poll), threading.Thread(target=sse)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            live.recv(timeout=10)
    assert info.value.rcvd is not None and info.value.rcvd.code == 1012
    server.proc.wait(timeout=15)
    for t in threads:
        t.join(timeout=15)
    # Without the drain, uvicorn waits out its graceful timeout for the open streams and says so.
    assert "graceful shutdown exceeded" not in server.log()
    assert results == {"poll": 200, "sse": "ended"}
    # uvicorn re-raises the signal once it has shut down cleanly.
    assert server.proc.returncode in (0, -signal.SIGTERM)
