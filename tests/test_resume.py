"""The resume guarantee: a client that reconnects with its cursor gets exactly what it missed,
once, in order per stream, on WebSocket, SSE and long-polling."""

from __future__ import annotations

import asyncio
import random
import threading
from typing import Any

import httpx
import orjson
import pytest

from clarion.streams import decode_cursor, encode_cursor
from harness.server import Server
from harness.util import user_id


def _titles(events: list[dict[str, Any]]) -> list[str]:
    return [e["notification"]["title"] for e in events if e["type"] == "notification"]


def test_websocket_resume_exactly_once(server: Server) -> None:
    u = user_id()
    live = server.connect(u)
    live.until("unread")
    for i in range(5):
        assert server.publish(users=[u], title=f"m{i}").status_code == 201
    got = [live.until("notification")["notification"]["title"] for _ in range(5)]
    assert got == [f"m{i}" for i in range(5)]
    cursor = live.cursor
    live.close()
    for i in range(5, 12):
        assert server.publish(users=[u], title=f"m{i}").status_code == 201
    again = server.connect(u, cursor)
    replay = [e for e in again.drain() if e["type"] == "notification"]
    assert _titles(replay) == [f"m{i}" for i in range(5, 12)]
    assert [e["seq"] for e in replay] == list(range(6, 13))
    again.close()


def test_cursor_position_in_welcome_covers_every_stream(server: Server) -> None:
    live = server.connect(user_id())
    position = decode_cursor(live.welcome["cursor"])
    assert set(position) == set(live.welcome["streams"])
    live.close()


def test_concurrent_publishers_and_a_client_reconnecting_at_random(server: Server) -> None:
    """8 publishers to one user; the client drops and resumes at random moments."""
    u = user_id()
    per_publisher, publishers = 25, 8
    acked: list[str] = []
    lock = threading.Lock()

    async def publisher(p: int) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(per_publisher):
                r = await client.post(
                    server.url + "/v1/notifications",
                    json={"users": [u], "title": f"p{p}-{i}"},
                    headers={"Authorization": f"Bearer {server.api_key}"},
                )
                assert r.status_code == 201, r.text
                with lock:
                    acked.append(f"p{p}-{i}")

    def publish_all() -> None:
        async def run() -> None:
            await asyncio.gather(*(publisher(p) for p in range(publishers)))

        asyncio.run(run())

    rng = random.Random(7)
    received: list[dict[str, Any]] = []
    live = server.connect(u)
    thread = threading.Thread(target=publish_all)
    thread.start()
    while thread.is_alive() or len(received) < per_publisher * publishers:
        try:
            event = live.recv(timeout=5)
        except TimeoutError:
            if not thread.is_alive():
                break
            continue
        if event["type"] == "notification":
            received.append(event)
        if rng.random() < 0.08:
            cursor = live.cursor
            live.close()
            live = server.connect(u, cursor)
    thread.join()
    received += [e for e in live.drain(0.5) if e["type"] == "notification"]
    live.close()
    seqs = [e["seq"] for e in received]
    assert seqs == sorted(seqs), "out of order"
    assert len(seqs) == len(set(seqs)), "duplicates"
    assert sorted(_titles(received)) == sorted(acked)
    assert seqs == list(range(1, len(acked) + 1)), "gap-free per stream"


def _sse_events(
    server: Server, ticket: str, headers: dict[str, str], want: int
) -> tuple[list[dict[str, Any]], str]:
    events: list[dict[str, Any]] = []
    last_id = ""
    with httpx.stream(
        "GET", server.url + "/v1/sse", params={"ticket": ticket}, headers=headers, timeout=10
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("id: "):
                last_id = line[4:]
            elif line.startswith("data: "):
                event = orjson.loads(line[6:])
                events.append(event)
                if len([e for e in events if e["type"] == "notification"]) >= want:
                    break
    return events, last_id


def _ticket(server: Server, u: str) -> str:
    return str(httpx.post(server.url + "/v1/tickets", headers=server.me(u)).json()["ticket"])


def test_sse_resume_with_last_event_id(server: Server) -> None:
    u = user_id()
    for i in range(3):
        server.publish(users=[u], title=f"s{i}")
    start = encode_cursor({f"user:{u}": 0})
    events, last_id = _sse_events(server, _ticket(server, u), {"Last-Event-ID": start}, 3)
    assert events[0]["type"] == "welcome"
    assert _titles(events) == ["s0", "s1", "s2"]
    assert decode_cursor(last_id)[f"user:{u}"] == 3
    for i in range(3, 6):
        server.publish(users=[u], title=f"s{i}")
    events, _ = _sse_events(server, _ticket(server, u), {"Last-Event-ID": last_id}, 3)
    assert _titles(events) == ["s3", "s4", "s5"]


def test_sse_delivers_live_events(server: Server) -> None:
    u = user_id()
    result: list[Any] = []

    def reader() -> None:
        result.append(_sse_events(server, _ticket(server, u), {}, 2))

    t = threading.Thread(target=reader)
    t.start()
    import time

    time.sleep(0.5)
    server.publish(users=[u], title="live-1")
    server.publish(users=[u], title="live-2")
    t.join(timeout=15)
    assert _titles(result[0][0]) == ["live-1", "live-2"]


def test_long_poll_resume_and_wait(server: Server) -> None:
    u = user_id()
    h = server.me(u)
    first = httpx.get(server.url + "/v1/poll", headers=h).json()
    assert first["events"] == []
    cursor = first["cursor"]
    for i in range(3):
        server.publish(users=[u], title=f"p{i}")
    r = httpx.get(server.url + "/v1/poll", params={"since": cursor}, headers=h).json()
    assert _titles(r["events"]) == ["p0", "p1", "p2"] and r["unread"] == 3
    cursor = r["cursor"]
    # Nothing waiting: the poll holds until an event arrives.
    result: list[Any] = []
    t = threading.Thread(
        target=lambda: result.append(
            httpx.get(
                server.url + "/v1/poll",
                params={"since": cursor, "timeout": 10},
                headers=h,
                timeout=20,
            ).json()
        )
    )
    t.start()
    import time

    time.sleep(0.5)
    assert t.is_alive(), "poll answered before any event"
    server.publish(users=[u], title="p3")
    t.join(timeout=10)
    assert _titles(result[0]["events"]) == ["p3"]
    again = httpx.get(
        server.url + "/v1/poll", params={"since": cursor, "timeout": 0}, headers=h
    ).json()
    assert _titles(again["events"]) == ["p3"], "the same cursor replays the same events"
    empty = httpx.get(
        server.url + "/v1/poll", params={"since": result[0]["cursor"], "timeout": 0}, headers=h
    ).json()
    assert empty["events"] == []


def test_long_poll_timeout_answers_empty(server: Server) -> None:
    h = server.me(user_id())
    cursor = httpx.get(server.url + "/v1/poll", headers=h).json()["cursor"]
    r = httpx.get(server.url + "/v1/poll", params={"since": cursor, "timeout": 0.5}, headers=h)
    assert r.status_code == 200 and r.json()["events"] == []


def test_waiting_polls_keep_their_connection_and_the_middleware_headers(server: Server) -> None:
    """A poll that waited outside HTTP answers with the headers the middleware gives (CORS,
    security) and hands the connection back for the next request (keep-alive)."""
    h = {**server.me(user_id()), "Origin": "http://localhost:3000"}
    with httpx.Client(base_url=server.url, headers=h, timeout=10) as client:
        cursor = client.get("/v1/poll").json()["cursor"]
        ports = set()
        for _ in range(3):
            r = client.get("/v1/poll", params={"since": cursor, "timeout": 0.5})
            assert r.status_code == 200 and r.json()["events"] == []
            assert r.headers["access-control-allow-origin"] == "http://localhost:3000"
            assert r.headers["x-content-type-options"] == "nosniff"
            ports.add(r.extensions["network_stream"].get_extra_info("client_addr"))
        assert len(ports) == 1, "each poll opened a new connection"


@pytest.mark.parametrize("cursor", ["!!!", "e30=x", "WzFd", "eyJhIjotMX0"])
def test_bad_cursor_is_400_naming_since(server: Server, cursor: str) -> None:
    r = httpx.get(server.url + "/v1/poll", params={"since": cursor}, headers=server.me("x"))
    assert r.status_code == 400 and r.json()["error"]["field"] == "since"


def test_broadcast_resume(server: Server) -> None:
    u = user_id()
    live = server.connect(u)
    cursor = live.cursor
    live.close()
    ids = [server.publish(all=True, title=f"b{i}").json()["id"] for i in range(3)]
    again = server.connect(u, cursor)
    got = [e["notification"]["id"] for e in again.drain() if e["type"] == "notification"]
    assert got == ids
    again.close()
