"""RabbitMQ (aio-pika): a queue consumed with manual acks, sent only after Clarion's commit.

The prefetch bounds what the broker hands over unacknowledged (the loop's batch): a crash
returns those messages to the queue, in their places, for the next consumer. The idempotency key
is the message's `message_id` (a message without one, and without an `idempotency_key` in its
body, is delivered at least once). A message that can never be published is published to the
dead-letter exchange (publisher-confirmed) with its error in the `x-clarion-error` header, then
acked; Clarion binds a `<queue>.dead` queue to it so nothing is dropped for want of a binding.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import orjson
from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelPreconditionFailed

from clarion.ingest.base import Message, Outcome, source_id

DEAD_EXCHANGE = "clarion.dead"
LINGER = 0.02  # seconds to wait for more of a batch once its first message is in


class AmqpConsumer:
    def __init__(self, url: str, prefetch: int = 1000) -> None:
        from clarion.ingest import label, split_params

        self.url, params = split_params(url, {"queue", "dead_letter", "source"})
        if not params.get("queue"):
            raise ValueError(f"consumer {label(url)}: name the queue (?queue=notifications)")
        self.queue_name = params["queue"]
        self.dead_exchange = params.get("dead_letter", DEAD_EXCHANGE)
        self.prefetch = prefetch
        self.name = label(url)
        parts = urlsplit(self.url)
        where = f"{parts.hostname}:{parts.port or 5672}{parts.path or '/'}/{self.queue_name}"
        self.source = params.get("source") or source_id("amqp", where)
        self._connection: Any = None
        self._channel: Any = None
        self._queue: Any = None
        self._dead: Any = None
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def connect(self) -> None:
        self._inbox = asyncio.Queue()
        self._connection = await aio_pika.connect(self.url, timeout=10)
        self._channel = await self._connection.channel(publisher_confirms=True)
        await self._channel.set_qos(prefetch_count=self.prefetch)
        try:
            self._queue = await self._channel.declare_queue(self.queue_name, durable=True)
        except ChannelPreconditionFailed:
            # The app declared it with arguments of its own: take it as it is.
            self._channel = await self._connection.channel(publisher_confirms=True)
            await self._channel.set_qos(prefetch_count=self.prefetch)
            self._queue = await self._channel.declare_queue(self.queue_name, passive=True)
        self._dead = await self._channel.declare_exchange(
            self.dead_exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        kept = await self._channel.declare_queue(f"{self.queue_name}.dead", durable=True)
        await kept.bind(self._dead, routing_key=self.queue_name)
        await self._queue.consume(self._inbox.put)

    async def fetch(self, limit: int, wait: float) -> list[Message]:
        """What the broker has pushed (at most the prefetch), waiting up to `wait` for the
        first message."""
        self._check()
        out: list[AbstractIncomingMessage] = []
        with contextlib.suppress(TimeoutError):
            out.append(await asyncio.wait_for(self._inbox.get(), timeout=wait))
        # The broker pushes the prefetch window message by message: wait a moment for the
        # rest of it, so a backlog commits in batches rather than a few at a time.
        deadline = asyncio.get_running_loop().time() + LINGER
        while out and len(out) < limit:
            if self._inbox.empty():
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    out.append(await asyncio.wait_for(self._inbox.get(), timeout=left))
                except TimeoutError:
                    break
            else:
                out.append(self._inbox.get_nowait())
        if not out:
            self._check()
        return [Message(m.message_id, m.body, m) for m in out]

    def _check(self) -> None:
        if self._connection is None or self._connection.is_closed or self._channel.is_closed:
            raise ConnectionError("the AMQP connection is closed")

    async def settle(self, outcome: Outcome) -> None:
        for message, error in outcome.dead:
            incoming: AbstractIncomingMessage = message.handle
            await self._dead.publish(
                aio_pika.Message(
                    incoming.body,
                    headers={
                        **(incoming.headers or {}),
                        "x-clarion-error": orjson.dumps(error).decode(),
                        "x-clarion-queue": self.queue_name,
                    },
                    content_type=incoming.content_type or "application/json",
                    message_id=incoming.message_id,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=self.queue_name,
            )
        settled = [m.handle for m in outcome.done] + [m.handle for m, _ in outcome.dead]
        if settled and not outcome.retry:
            # The whole batch: one ack for every delivery up to its last (the batches before
            # it are settled already; later deliveries have higher tags).
            await max(settled, key=lambda m: m.delivery_tag).ack(multiple=True)
            return
        for incoming in settled:
            await incoming.ack()
        for message in outcome.retry:
            await message.handle.nack(requeue=True)

    async def lag(self) -> int | None:
        """Messages ready in the queue (besides those handed over and not yet acked)."""
        queue = await self._channel.declare_queue(self.queue_name, passive=True)
        count = queue.declaration_result.message_count
        return int(count) if count is not None else None

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=5)
