"""Consumers (clarion/ingest): the pure decisions, and each source on its real server, fed as an
app feeds it, delivering live through a real `clarion serve`."""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from clarion.config import ConfigError, load_settings
from clarion.domain import ClarionError, Published, StoreUnavailable
from clarion.ingest import ConsumerLoop, Message, Outcome, open_consumer
from clarion.ingest.base import decode, outcome
from clarion.node import Node
from harness.server import Server
from harness.sources import KINDS, Outbox, Source, metric, source
from harness.util import eventually, user_id

# -- decisions (no I/O) ------------------------------------------------------------------------


def test_a_body_is_validated_as_the_api_validates_it_and_keyed_by_the_message_id() -> None:
    [one] = decode(Message("m-1", b'{"users": ["a"], "title": "hi"}'))  # type: ignore[misc]
    assert one.idempotency_key == "m-1" and one.users == ["a"]
    [own] = decode(Message("m-2", b'{"users": ["a"], "title": "hi", "idempotency_key": "k"}'))  # type: ignore[misc]
    assert own.idempotency_key == "k"  # the app's own key wins
    [bare] = decode(Message(None, b'{"all": true, "title": "hi"}'))  # type: ignore[misc]
    assert bare.idempotency_key is None
    [long] = decode(Message("x" * 300, b'{"users": ["a"], "title": "hi"}'))  # type: ignore[misc]
    assert long.idempotency_key is not None and len(long.idempotency_key) == 64


def test_a_batch_body_keys_each_item_and_is_all_or_nothing() -> None:
    items = decode(
        Message(
            "m",
            orjson.dumps(
                {
                    "notifications": [
                        {"users": ["a"], "title": "1"},
                        {"users": ["b"], "title": "2", "idempotency_key": "own"},
                    ]
                }
            ),
        )
    )
    assert isinstance(items, list)
    assert [i.idempotency_key for i in items] == ["m/0", "own"]
    bad = decode(
        Message(
            "m", orjson.dumps({"notifications": [{"users": ["a"], "title": "1"}, {"users": ["b"]}]})
        )
    )
    assert isinstance(bad, ClarionError) and bad.field == "notifications[1].title"


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"not json", None, "not JSON"),
        (b"[1, 2]", None, "JSON object"),
        (b'{"title": "t"}', None, "no audience"),
        (b'{"users": ["a"], "title": "t", "priority": "loud"}', "priority", "low"),
        (b'{"users": ["a"], "title": "t", "colour": 1}', "colour", "not permitted"),
        (b'{"notifications": []}', "notifications", "1 to 500"),
    ],
)
def test_an_invalid_body_says_why_and_where(body: bytes, field: str | None, words: str) -> None:
    err = decode(Message("m", body))
    assert isinstance(err, ClarionError), err
    assert err.status in (400, 422) and err.field == field and words in err.message, err.body()


def test_outcome_acks_commits_dead_letters_refusals_and_hands_back_the_rest() -> None:
    ok = Published("n", [], 1)
    msgs = [Message(str(i), b"") for i in range(5)]
    invalid = ClarionError(422, "invalid", "bad", "title")
    conflict = ClarionError(409, "idempotency_conflict", "reused")
    got = outcome(
        msgs,
        [[ok, ok], invalid, [ok, conflict], [RuntimeError("bug")], [ok, StoreUnavailable()]],
    )
    assert [m.id for m in got.done] == ["0"]
    assert [(m.id, e["code"]) for m, e in got.dead] == [
        ("1", "invalid"),
        ("2", "idempotency_conflict"),
    ]
    assert [m.id for m in got.retry] == ["3", "4"] and got.unavailable
    assert not outcome(msgs[:1], [[ok]]).unavailable


def test_consumer_urls_are_checked_when_the_settings_are_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    urls = "postgresql://u@h/app?table=clarion_outbox  redis://h:6379/0?stream=s&group=g"
    monkeypatch.setenv("CLARION_CONSUME", urls)
    assert load_settings().consume == urls.split()
    monkeypatch.setenv("CLARION_CONSUME", '["nats://a:4222,nats://b:4222?stream=S"]')
    assert load_settings().consume == ["nats://a:4222,nats://b:4222?stream=S"]
    for bad, words in [
        ("kafka://h?topic=t", "unsupported consumer URL"),
        ("amqp://guest:secret@h/", "name the queue"),
        ("postgresql://h/app?table=Drop;Table", "outbox table"),
    ]:
        monkeypatch.setenv("CLARION_CONSUME", bad)
        with pytest.raises(ConfigError, match=re.escape(words)) as info:
            load_settings()
        assert "CLARION_CONSUME" in str(info.value) and "secret" not in str(info.value)


def test_each_source_has_its_own_key_scope() -> None:
    a, _ = open_consumer("redis://h:6379/0?stream=s1")
    b, _ = open_consumer("redis://h:6379/0?stream=s2")
    c, _ = open_consumer("redis://h:6379/0?stream=s1&source=orders")
    assert a.source != b.source and c.source == "orders"
    assert all(len(x.source) <= 32 for x in (a, b))
    assert open_consumer("amqp://h/?queue=q&batch=50&wait=0.5")[1] == {"batch": 50, "wait": 0.5}


def test_clarion_outbox_ddl_prints_the_table(tmp_path: Path) -> None:
    server = Server(tmp_path)
    ddl = server.cli("outbox", "ddl", "--table", "app.outbox")
    assert "CREATE TABLE IF NOT EXISTS app.outbox" in ddl and "payload jsonb NOT NULL" in ddl
    assert "pg_notify('outbox'" in ddl and "FOR EACH STATEMENT" in ddl


# -- each source, on its real server, through a real node --------------------------------------


@pytest.fixture(params=KINDS)
def src(request: pytest.FixtureRequest) -> Iterator[Source]:
    with source(request.param) as made:
        yield made


@pytest.mark.slow  # a server per source: the outbox's exactly-once test below stays in make test
def test_a_source_delivers_live_once_and_dead_letters_the_invalid(
    src: Source, tmp_path: Path
) -> None:
    server = Server(tmp_path).start("--consume", src.consume_url(wait="0.2"))
    u = user_id()
    live = server.connect(u)
    try:
        items: list[Any] = [
            ({"users": [u], "title": "one"}, "a"),
            ({"users": [u]}, "b"),  # no title
            (
                {"notifications": [{"users": [u], "title": "b1"}, {"users": [u], "title": "b2"}]},
                "c",
            ),
        ]
        if not isinstance(src, Outbox):  # a jsonb column holds only JSON
            items.append((b"{not json", "d"))
        if src.ids:  # the app's own message id: a redelivery of "a" creates nothing
            items.append(({"users": [u], "title": "one"}, "a"))
        items.append(({"users": [u], "title": "last"}, "e"))
        asyncio.run(src.send(items))
        titles = []
        while not titles or titles[-1] != "last":
            titles.append(live.until("notification")["notification"]["title"])
        assert titles == ["one", "b1", "b2", "last"]
        assert not [e for e in live.drain() if e["type"] == "notification"]

        expected_dead = 1 if isinstance(src, Outbox) else 2
        eventually(lambda: len(asyncio.run(src.dead())) == expected_dead, what="dead letters")
        dead = asyncio.run(src.dead())
        assert dead[0][1]["field"] == "title" and orjson.loads(dead[0][0]) == {"users": [u]}
        if expected_dead == 2:
            assert dead[1][0] == b"{not json" and "not JSON" in dead[1][1]["message"]
        eventually(lambda: metric(server, "clarion_ingest_consumed") == len(items) - expected_dead)
        assert metric(server, "clarion_ingest_dead_lettered") == expected_dead
        eventually(lambda: metric(server, "clarion_ingest_lag") == 0, what="lag 0", timeout=15)
        [status] = httpx.get(server.url + "/readyz").json()["consumers"]
        assert status["state"] == "running" and status["dead_lettered"] == expected_dead
    finally:
        live.close()
        server.kill(signal.SIGTERM)


def test_an_outbox_row_is_published_only_if_the_app_commits(tmp_path: Path) -> None:
    import asyncpg

    with source("outbox") as src:
        assert isinstance(src, Outbox)
        server = Server(tmp_path).start("--consume", src.consume_url(poll="30"))
        u = user_id()
        live = server.connect(u)

        async def app_transaction(title: str, commit: bool) -> None:
            conn = await asyncpg.connect(src.db_url)
            try:
                tx = conn.transaction()
                await tx.start()
                await conn.execute(
                    "INSERT INTO clarion_outbox (payload) VALUES ($1::jsonb)",
                    orjson.dumps({"users": [u], "title": title}).decode(),
                )
                await (tx.commit() if commit else tx.rollback())
            finally:
                await conn.close()

        try:
            asyncio.run(app_transaction("rolled back", commit=False))
            asyncio.run(app_transaction("committed", commit=True))
            # Woken by the trigger's NOTIFY at the app's commit (the poll is 30 s away).
            event = live.until("notification", timeout=10)
            assert event["notification"]["title"] == "committed"
            assert not [e for e in live.drain(0.5) if e["type"] == "notification"]
            r = httpx.get(server.url + "/v1/me/notifications", headers=server.me(u))
            assert [n["title"] for n in r.json()["items"]] == ["committed"]
        finally:
            live.close()
            server.kill(signal.SIGTERM)


class CrashBeforeAck:
    """A consumer whose first settle never reaches the source: the process died between
    Clarion's commit and the ack (its connection drops, nothing is acked)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name, self.source = inner.name, inner.source
        self.crashed = False

    async def connect(self) -> None:
        await self.inner.connect()

    async def fetch(self, limit: int, wait: float) -> list[Message]:
        result: list[Message] = await self.inner.fetch(limit, wait)
        return result

    async def settle(self, outcome: Outcome) -> None:
        if not self.crashed:
            self.crashed = True
            await self.inner.close()
            raise ConnectionError("killed before the ack")
        await self.inner.settle(outcome)

    async def lag(self) -> int | None:
        result: int | None = await self.inner.lag()
        return result

    async def close(self) -> None:
        await self.inner.close()


async def test_a_redelivery_after_the_commit_creates_nothing_twice(
    src: Source, tmp_path: Path
) -> None:
    from clarion.config import Settings

    u = user_id()
    await src.send(
        [({"users": [u], "title": f"n{i}", "data": {"n": i}}, f"m{i}") for i in range(20)]
    )
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret="x" * 40)
    node = Node(settings)
    await node.start()
    extra = {"nats": {"ack_wait": "1"}, "redis": {"consumer": "c1"}}.get(src.kind, {})
    consumer, options = open_consumer(src.consume_url(batch="8", wait="1", **extra))
    loop = ConsumerLoop(CrashBeforeAck(consumer), node.publish, node.store.ping, **options)
    try:
        await loop.consumer.connect()
        with pytest.raises(ConnectionError):  # a batch (at most 8) committed, none acked
            while not await loop.run_once():
                pass
        assert 0 < len(await node.store.events_after(f"user:{u}", 0, 100)) <= 8
        await loop.consumer.connect()
        for _ in range(40):  # the 8 come back (JetStream: after ack_wait), then the rest
            await loop.run_once()
            if loop.counters.consumed == 20:
                break
        assert loop.counters.consumed == 20
        stored = await node.store.events_after(f"user:{u}", 0, 100)
        ns = [orjson.loads(e.payload)["notification"]["data"]["n"] for e in stored]
        assert ns == list(range(20)), "each message exactly once, in order"
    finally:
        await loop.consumer.close()
        await node.stop()


@pytest.fixture
def redis_src() -> Iterator[Source]:
    with source("redis") as made:
        yield made


async def test_a_stop_finishes_and_acks_the_batch_in_hand(
    redis_src: Source, tmp_path: Path
) -> None:
    """Graceful drain: once stopping, nothing more is fetched, and the batch being published
    commits and is acked (nothing is left pending for another node to redo)."""
    import redis.asyncio as aioredis

    from clarion.config import Settings
    from harness.sources import RedisStream

    src = redis_src
    assert isinstance(src, RedisStream)
    u = user_id()
    await src.send([({"users": [u], "title": f"n{i}"}, None) for i in range(30)])
    node = Node(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret="x" * 40))
    await node.start()
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_publish(body: Any, publisher: str) -> Published:
        entered.set()
        await release.wait()
        return await node.publish(body, publisher)

    consumer, options = open_consumer(src.consume_url(batch="10", consumer="c1"))
    loop = ConsumerLoop(consumer, slow_publish, node.store.ping, **options)
    loop.start()
    try:
        await asyncio.wait_for(entered.wait(), 30)
        stopping = asyncio.create_task(loop.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done(), "the stop waits for the batch in hand"
        release.set()
        await asyncio.wait_for(stopping, 30)
        assert loop.counters.consumed == 10 and loop.counters.state == "stopped"
        assert len(await node.store.events_after(f"user:{u}", 0, 100)) == 10
        client = aioredis.Redis.from_url(src.server)
        try:
            [group] = await client.xinfo_groups(src.stream)
            assert group["pending"] == 0 and group["lag"] == 20, group
        finally:
            await client.aclose()
    finally:
        await node.stop()
