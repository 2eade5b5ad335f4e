"""The sources Clarion consumes (clarion/ingest), as an app would feed them, on the machine's
real servers: an outbox table in a fresh PostgreSQL database, a fresh RabbitMQ queue, a fresh
JetStream stream, a fresh Redis stream. Each is made for one test and removed after it.

Every method opens its own connection, so sync tests call them through `asyncio.run` and async
tests await them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from harness.services import NATS_URL, REDIS_URL, postgres_database, require_service

if TYPE_CHECKING:
    from harness.server import Server

AMQP_URL = os.environ.get("CLARION_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/")
Item = tuple[dict[str, Any] | bytes, str | None]  # a body and its message id (None: none)


def _chunks(items: list[Item], size: int = 200) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _bytes(body: dict[str, Any] | bytes) -> bytes:
    return body if isinstance(body, bytes) else orjson.dumps(body)


class Outbox:
    kind = "outbox"
    ids = False  # the row id is the message id: the app cannot choose it

    def __init__(self, url: str, table: str = "clarion_outbox") -> None:
        self.db_url = url
        self.table = table

    def consume_url(self, db_url: str | None = None, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"table": self.table, **params}.items())
        return f"{db_url or self.db_url}?{query}"

    async def setup(self) -> None:
        import asyncpg

        from clarion.ingest.outbox import ddl

        conn = await asyncpg.connect(self.db_url)
        try:
            await conn.execute(ddl(self.table))
        finally:
            await conn.close()

    async def send(self, items: list[Item]) -> None:
        """One app transaction that inserts every item (ids are the table's own)."""
        import asyncpg

        conn = await asyncpg.connect(self.db_url)
        try:
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {self.table} (payload) VALUES ($1::jsonb)",
                    [(_bytes(body).decode(),) for body, _ in items],
                )
        finally:
            await conn.close()

    async def dead(self) -> list[tuple[bytes, dict[str, Any]]]:
        import asyncpg

        conn = await asyncpg.connect(self.db_url)
        try:
            rows = await conn.fetch(
                f"SELECT payload, error FROM {self.table} WHERE error IS NOT NULL ORDER BY id"
            )
        finally:
            await conn.close()
        return [(r["payload"].encode(), orjson.loads(r["error"])) for r in rows]

    async def cleanup(self) -> None:
        pass  # the database is dropped


class Rabbit:
    kind = "amqp"
    ids = True

    def __init__(self) -> None:
        self.queue = "clarion-test-" + secrets.token_hex(6)

    def consume_url(self, base: str | None = None, **params: Any) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"queue": self.queue, **params}.items())
        return f"{base or AMQP_URL}?{query}"

    async def setup(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel()
            await channel.declare_queue(self.queue, durable=True)

    async def send(self, items: list[Item]) -> None:
        import aio_pika

        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel(publisher_confirms=True)
            for chunk in _chunks(items):  # in order: one chunk's confirms awaited together
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            aio_pika.Message(
                                _bytes(body),
                                message_id=id,
                                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            ),
                            routing_key=self.queue,
                        )
                        for body, id in chunk
                    )
                )

    async def dead(self) -> list[tuple[bytes, dict[str, Any]]]:
        import aio_pika

        out = []
        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel()
            queue = await channel.declare_queue(f"{self.queue}.dead", durable=True)
            # Left unacked, each stays in the queue: it returns there when the channel closes.
            while (msg := await queue.get(fail=False)) is not None:
                headers = msg.headers or {}
                out.append((msg.body, orjson.loads(str(headers["x-clarion-error"]))))
        return out

    async def depth(self) -> int:
        import aio_pika

        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel()
            queue = await channel.declare_queue(self.queue, passive=True)
            return int(queue.declaration_result.message_count or 0)

    async def cleanup(self) -> None:
        import aio_pika

        conn = await aio_pika.connect(AMQP_URL)
        async with conn:
            channel = await conn.channel()
            for name in (self.queue, f"{self.queue}.dead"):
                await channel.queue_delete(name)


class JetStream:
    kind = "nats"
    ids = False  # the stream sequence is the message id

    def __init__(self, server: str = NATS_URL) -> None:
        tag = secrets.token_hex(6)
        self.server = server
        self.stream = f"CLTEST_{tag.upper()}"
        self.subject = f"cltest.{tag}.in"
        self.dead_subject = f"cltest.{tag}.dead"

    def consume_url(self, base: str | None = None, **params: Any) -> str:
        values = {"stream": self.stream, "dead_letter": self.dead_subject, **params}
        return f"{base or self.server}?" + "&".join(f"{k}={v}" for k, v in values.items())

    async def _js(self) -> Any:
        import nats

        nc = await nats.connect(self.server)
        return nc, nc.jetstream()

    async def setup(self) -> None:
        nc, js = await self._js()
        try:
            await js.add_stream(name=self.stream, subjects=[self.subject])
            await js.add_stream(name=self.stream + "_DEAD", subjects=[self.dead_subject])
        finally:
            await nc.close()

    async def send(self, items: list[Item]) -> None:
        nc, js = await self._js()
        try:
            for chunk in _chunks(items):
                await asyncio.gather(*(js.publish(self.subject, _bytes(b)) for b, _ in chunk))
        finally:
            await nc.close()

    async def dead(self) -> list[tuple[bytes, dict[str, Any]]]:
        nc, js = await self._js()
        out = []
        try:
            info = await js.stream_info(self.stream + "_DEAD")
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await js.get_msg(self.stream + "_DEAD", seq)
                out.append((msg.data, orjson.loads(msg.headers["Clarion-Error"])))
        finally:
            await nc.close()
        return [d for d in out if d[0]]

    async def cleanup(self) -> None:
        nc, js = await self._js()
        try:
            for name in (self.stream, self.stream + "_DEAD"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(name)
        finally:
            await nc.close()


class RedisStream:
    kind = "redis"
    ids = False  # the entry id is the message id

    def __init__(self, server: str = REDIS_URL) -> None:
        self.server = server
        self.stream = "clarion-test:" + secrets.token_hex(6)

    def consume_url(self, base: str | None = None, **params: Any) -> str:
        values = {"stream": self.stream, **params}
        return f"{base or self.server}?" + "&".join(f"{k}={v}" for k, v in values.items())

    def _client(self) -> Any:
        import redis.asyncio as aioredis

        return aioredis.Redis.from_url(self.server)

    async def setup(self) -> None:
        pass

    async def send(self, items: list[Item]) -> None:
        client = self._client()
        try:
            async with client.pipeline(transaction=False) as pipe:
                for body, _ in items:
                    pipe.xadd(self.stream, {"payload": _bytes(body)})
                await pipe.execute()
        finally:
            await client.aclose()

    async def dead(self) -> list[tuple[bytes, dict[str, Any]]]:
        client = self._client()
        try:
            entries = await client.xrange(self.stream + ":dead")
        finally:
            await client.aclose()
        return [(f[b"payload"], orjson.loads(f[b"error"])) for _, f in entries]

    async def cleanup(self) -> None:
        client = self._client()
        try:
            await client.delete(self.stream, self.stream + ":dead")
        finally:
            await client.aclose()


def metric(server: Server, name: str) -> float:
    """A metric of a node, summed over its labels (0 when absent)."""
    text = httpx.get(server.url + "/metrics", timeout=10).text
    found = re.findall(rf"^{name}(?:_total)?\{{[^}}]*\}} (\S+)$", text, re.M)
    return sum(float(v) for v in found)


Source = Outbox | Rabbit | JetStream | RedisStream
KINDS = ["outbox", "amqp", "nats", "redis"]


@contextmanager
def source(kind: str) -> Iterator[Source]:
    """A fresh source of one kind on the machine's server (skipped, or failed in CI, when the
    server is not running), removed afterwards."""
    made: Source
    with contextlib.ExitStack() as stack:
        if kind == "outbox":
            made = Outbox(stack.enter_context(postgres_database()))
        elif kind == "amqp":
            require_service("RabbitMQ", AMQP_URL)
            made = Rabbit()
        elif kind == "nats":
            require_service("NATS", NATS_URL)
            made = JetStream()
        else:
            require_service("Redis", REDIS_URL)
            made = RedisStream()
        asyncio.run(made.setup())
        try:
            yield made
        finally:
            asyncio.run(made.cleanup())
