"""A client that stops reading is closed with a resync hint (4008) instead of growing the
server's memory; reconnecting with its cursor then delivers everything it missed."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from harness.server import Server


@pytest.mark.slow  # a whole-system restart or kill: make test-slow
def test_slow_consumer_is_closed_with_resync_and_can_resume(tmp_path: Path) -> None:
    server = Server(tmp_path, {"CLARION_MAX_BUFFER": "65536"}).start()
    try:
        # max_queue=1: the client's reader stops after one message, so TCP pushes back.
        with connect(server.ws_url, max_queue=1, max_size=None) as ws:
            ws.send(orjson.dumps({"type": "auth", "token": server.token("sloth")}).decode())
            welcome = orjson.loads(ws.recv(timeout=10))
            filler = "x" * 15000

            async def flood() -> int:
                async with httpx.AsyncClient(timeout=30) as client:
                    sem = asyncio.Semaphore(8)

                    async def one(i: int) -> int:
                        async with sem:
                            r = await client.post(
                                server.url + "/v1/notifications",
                                json={
                                    "users": ["sloth"],
                                    "title": f"n{i}",
                                    "body": filler[:4000],
                                    "data": {"pad": filler},
                                },
                                headers={"Authorization": f"Bearer {server.api_key}"},
                            )
                            return r.status_code

                    codes = await asyncio.gather(*(one(i) for i in range(1200)))
                    return codes.count(201)

            published = asyncio.run(flood())
            assert published == 1200
            events = []
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    events.append(orjson.loads(ws.recv(timeout=20)))
        assert info.value.rcvd is not None and info.value.rcvd.code == 4008
        assert events[-1] == {"type": "resync", "reason": "slow_consumer"}
        seen = [e["seq"] for e in events if e["type"] == "notification"]
        assert seen == list(range(1, len(seen) + 1)) and len(seen) < 1200
        # Resume from what it saw: the rest arrives, once, in order.
        from clarion.streams import decode_cursor, encode_cursor

        position = decode_cursor(welcome["cursor"])
        position["user:sloth"] = seen[-1] if seen else 0
        live = server.connect("sloth", encode_cursor(position))
        rest = [e["seq"] for e in live.drain(1.0) if e["type"] == "notification"]
        live.close()
        assert seen + rest == list(range(1, 1201))
    finally:
        server.kill()


@pytest.mark.slow  # 1,200 publishes of 15 KB and a replay of most of them
def test_slow_sse_consumer_gets_resync_then_resumes_with_its_last_event_id(
    tmp_path: Path,
) -> None:
    """The same rule on a detached SSE stream (transports/sse.py): the transport's buffer over
    the limit ends the stream with `resync`; `Last-Event-ID` then brings the rest."""
    server = Server(tmp_path, {"CLARION_MAX_BUFFER": "65536"}).start()
    headers = {"Authorization": f"Bearer {server.token('snail')}"}
    try:
        with httpx.stream("GET", server.url + "/v1/sse", headers=headers, timeout=30) as resp:
            lines = resp.iter_lines()
            assert next(line for line in lines if line.startswith("data: ")).startswith(
                'data: {"type":"welcome"'
            )
            filler = "x" * 15000

            async def flood() -> int:
                async with httpx.AsyncClient(timeout=30) as client:
                    sem = asyncio.Semaphore(8)

                    async def one(i: int) -> int:
                        async with sem:
                            r = await client.post(
                                server.url + "/v1/notifications",
                                json={"users": ["snail"], "title": f"n{i}", "data": {"p": filler}},
                                headers={"Authorization": f"Bearer {server.api_key}"},
                            )
                            return r.status_code

                    codes = await asyncio.gather(*(one(i) for i in range(1200)))
                    return codes.count(201)

            assert asyncio.run(flood()) == 1200
            events, last_id = [], None
            for line in lines:  # to the stream's end: the server closed it
                if line.startswith("id: "):
                    last_id = line[4:]
                elif line.startswith("data: "):
                    events.append(orjson.loads(line[6:]))
        assert events[-1] == {"type": "resync", "reason": "slow_consumer"}
        seen = [e["seq"] for e in events if e["type"] == "notification"]
        assert seen == list(range(1, len(seen) + 1)) and len(seen) < 1200
        assert last_id is not None
        rest: list[int] = []
        resume = {**headers, "Last-Event-ID": last_id}
        with httpx.stream("GET", server.url + "/v1/sse", headers=resume, timeout=30) as resp:
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    event = orjson.loads(line[6:])
                    if event["type"] == "notification":
                        rest.append(event["seq"])
                    elif event["type"] == "unread":
                        break
        assert seen + rest == list(range(1, 1201))
    finally:
        server.kill()
