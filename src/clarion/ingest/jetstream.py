"""NATS JetStream (nats-py): a durable pull consumer on the app's stream.

Acked only after Clarion's commit; a transient failure is `nak`ed with a delay; a message that
can never be published is `term`inated after a copy went to the dead-letter subject
(`clarion.dead.<stream>` unless `dead_letter=` says otherwise), with the error in the
`Clarion-Error` header. The idempotency key is the message's stream sequence, so a redelivery
(ack lost, node killed) creates nothing. The consumer Clarion creates allows at most a batch of
unacknowledged messages (`max_ack_pending`): after a crash the unacked ones are redelivered
before anything newer, so each stream keeps the order the app published in.
"""

from __future__ import annotations

import contextlib
from typing import Any

import nats
import orjson
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NoStreamResponseError, NotFoundError

from clarion.ingest.base import Message, Outcome, source_id

NAK_DELAY = 2.0  # seconds before a message handed back is delivered again


class JetStreamConsumer:
    def __init__(self, url: str, pending: int = 1000) -> None:
        from clarion.ingest import label, split_params

        rest, params = split_params(
            url, {"stream", "consumer", "dead_letter", "ack_wait", "source"}
        )
        if not params.get("stream"):
            raise ValueError(f"consumer {label(url)}: name the stream (?stream=NOTIFY)")
        self.servers = [s.strip() for s in rest.split("?", 1)[0].split(",") if s.strip()]
        self.stream = params["stream"]
        self.durable = params.get("consumer", "clarion")
        self.dead_subject = params.get("dead_letter", f"clarion.dead.{self.stream}")
        self.ack_wait = float(params.get("ack_wait", "30"))
        self.pending = pending
        self.name = label(url)
        # The stream and consumer name it: nodes may list a cluster's servers differently.
        self.source = params.get("source") or source_id("nats", f"{self.stream}/{self.durable}")
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None

    async def connect(self) -> None:
        # The loop reconnects (with backoff) and refetches: the client itself does not.
        self._nc = await nats.connect(
            servers=self.servers, allow_reconnect=False, connect_timeout=5
        )
        self._js = self._nc.jetstream()
        try:
            await self._js.stream_info(self.stream)
        except NotFoundError:
            raise LookupError(f"no JetStream stream {self.stream!r} (the app creates it)") from None
        try:
            await self._js.consumer_info(self.stream, self.durable)
        except NotFoundError:
            await self._js.add_consumer(
                self.stream,
                ConsumerConfig(
                    durable_name=self.durable,
                    ack_policy=AckPolicy.EXPLICIT,
                    ack_wait=self.ack_wait,
                    max_ack_pending=self.pending,
                ),
            )
        self._sub = await self._js.pull_subscribe_bind(durable=self.durable, stream=self.stream)

    async def fetch(self, limit: int, wait: float) -> list[Message]:
        if self._nc is None or not self._nc.is_connected:
            raise ConnectionError("the NATS connection is closed")
        try:
            msgs = await self._sub.fetch(batch=limit, timeout=wait)
        except NatsTimeout:
            return []
        return [Message(str(m.metadata.sequence.stream), m.data, m) for m in msgs]

    async def settle(self, outcome: Outcome) -> None:
        for message, error in outcome.dead:
            headers = {
                "Clarion-Error": orjson.dumps(error).decode(),
                "Clarion-Stream": self.stream,
                "Clarion-Stream-Seq": str(message.id),
            }
            try:
                await self._js.publish(self.dead_subject, message.handle.data, headers=headers)
            except NoStreamResponseError:  # no stream keeps them: a plain message, for listeners
                await self._nc.publish(self.dead_subject, message.handle.data, headers=headers)
            await message.handle.term()
        for message in outcome.done:
            await message.handle.ack()
        for message in outcome.retry:
            await message.handle.nak(delay=NAK_DELAY)
        await self._nc.flush(timeout=5)

    async def lag(self) -> int | None:
        info = await self._js.consumer_info(self.stream, self.durable)
        return int(info.num_pending or 0) + int(info.num_ack_pending or 0)

    async def close(self) -> None:
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()
