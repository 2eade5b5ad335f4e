"""The Python SDK: publish, and a subscriber that survives a server crash without loss."""

from __future__ import annotations

import asyncio
import signal

import pytest

from clarion.client import ClarionError, Publisher, subscribe
from harness.server import Server
from harness.util import eventually_async, user_id


async def test_publisher_reports_errors_with_their_field(server: Server) -> None:
    async with Publisher(server.url, server.api_key) as clarion:
        result = await clarion.publish(users=["x"], title="ok")
        assert result["recipients"] == 1
        with pytest.raises(ClarionError) as info:
            await clarion.publish(users=["x"], title="")
    assert info.value.status == 422 and info.value.field == "title"
    async with Publisher(server.url, "clk_bad_key") as bad:
        with pytest.raises(ClarionError) as info:
            await bad.publish(users=["x"], title="no")
    assert info.value.status == 401


@pytest.mark.slow  # a whole-system run (several processes, or a kill): make test-slow
async def test_subscriber_resumes_across_a_crash(fresh_server: Server) -> None:
    server = fresh_server.start()
    u = user_id()
    got: list[str] = []
    live = asyncio.Event()

    async def follow() -> None:
        async for event in subscribe(server.url, token=lambda: server.token(u)):
            if event["type"] == "unread":
                live.set()
            if event["type"] == "notification":
                got.append(event["notification"]["title"])

    task = asyncio.ensure_future(follow())
    await asyncio.wait_for(live.wait(), 10)
    async with Publisher(server.url, server.api_key) as clarion:
        for i in range(3):
            await clarion.publish(users=[u], title=f"before-{i}")
    await eventually_async(lambda: len(got) == 3, 10, "3 events", interval=0.05)
    await asyncio.to_thread(server.kill, signal.SIGKILL)
    await asyncio.to_thread(server.start)
    async with Publisher(server.url, server.api_key) as clarion:
        for i in range(3):
            await clarion.publish(users=[u], title=f"after-{i}")
    await eventually_async(lambda: len(got) == 6, 20, "6 events", interval=0.05)
    task.cancel()
    assert got == [f"before-{i}" for i in range(3)] + [f"after-{i}" for i in range(3)]


async def test_publisher_manages_topics_and_batches(server: Server) -> None:
    topic, alice, bob = f"sdk-{user_id()}", user_id(), user_id()
    got: list[str] = []
    live = asyncio.Event()

    async def follow() -> None:
        async for event in subscribe(server.url, token=lambda: server.token(alice)):
            if event["type"] in ("unread", "follow"):
                live.set()
            if event["type"] == "notification":
                got.append(event["notification"]["title"])

    task = asyncio.ensure_future(follow())
    await asyncio.wait_for(live.wait(), 10)
    async with Publisher(server.url, server.api_key) as clarion:
        live.clear()
        await clarion.subscribe(topic, [alice])
        await asyncio.wait_for(live.wait(), 10)
        results = await clarion.publish_many(
            [
                {"topics": [topic], "title": "to the topic"},
                {"users": [bob], "title": "to bob"},
                {"users": [alice], "topics": [topic], "title": "both routes"},
            ]
        )
        assert [r["status"] for r in results] == [201, 201, 201]
        for _ in range(100):
            if len(got) >= 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        assert sorted(got) == ["both routes", "to the topic"]
        await clarion.subscribe(topic, [alice], subscribed=False)
    task.cancel()


async def test_a_refused_token_raises_after_one_fresh_try(server: Server) -> None:
    calls: list[int] = []

    def forged() -> str:
        calls.append(1)
        return server.token(user_id())[:-4] + "AAAA"

    with pytest.raises(ClarionError) as info:
        async with asyncio.timeout(20):
            async for _ in subscribe(server.url, token=forged):
                pass
    assert info.value.status == 4001 and info.value.code == "unauthorized"
    assert "Signature verification failed" in info.value.message
    assert len(calls) == 2


async def test_a_token_with_a_newline_works_and_a_saved_cursor_resumes(server: Server) -> None:
    """`clarion token u > file`: the file ends with a newline. And the subscriber's own restart:
    it saved the cursor of the last event it handled and passes it back."""
    u = user_id()
    token = server.token(u) + "\n"
    saved = None
    async with asyncio.timeout(30), Publisher(server.url, server.api_key) as clarion:
        async for event in subscribe(server.url, token=token):
            if event["type"] == "unread" and saved is None:  # live: the first event
                saved = ""
                await clarion.publish(users=[u], title="one")
            if event["type"] == "notification":
                saved = event["cursor"]
                break
        await clarion.publish(users=[u], title="two")  # while the subscriber is down
        async for event in subscribe(server.url, token=token, cursor=saved):
            if event["type"] == "notification":
                assert event["notification"]["title"] == "two"
                break
