"""Ingest: publish bodies consumed from the app's outbox table or its queues, chosen by URL.

`postgresql://` (an outbox table in the app's database), `amqp://` (RabbitMQ), `nats://`
(a JetStream durable pull consumer), `redis://` (a Streams consumer group). Each backend is
imported only when its scheme is asked for; the shared loop is in `base.py`.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from clarion.ingest.base import Consumer, ConsumerLoop, Message, Outcome, Publish, Ready

log = logging.getLogger("clarion.ingest")
SCHEMES = "postgresql://...?table=, amqp://...?queue=, nats://...?stream=&consumer=, redis://...?stream=&group="


def split_params(url: str, names: set[str]) -> tuple[str, dict[str, str]]:
    """The URL without Clarion's own query parameters (`names`), and those parameters: the
    rest of the query stays for the client library."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in names}
    rest = urlencode([(k, v) for k, v in query if k not in names])
    return urlunsplit(parts._replace(query=rest)), ours


def label(url: str) -> str:
    """The URL as logs and metrics show it: without a password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def open_consumer(url: str) -> tuple[Consumer, dict[str, Any]]:
    """The consumer for a URL, and the loop options its URL sets (`batch`, `wait`)."""
    url, loop = split_params(url, {"batch", "wait"})
    options: dict[str, Any] = {}
    try:
        if "batch" in loop:
            options["batch"] = max(1, min(int(loop["batch"]), 10_000))
        if "wait" in loop:
            options["wait"] = max(0.01, float(loop["wait"]))
    except ValueError:
        raise ValueError(f"consumer {label(url)}: batch and wait must be numbers") from None
    scheme = url.split("://", 1)[0].lower()
    if scheme in ("postgresql", "postgres", "postgresql+asyncpg"):
        from clarion.ingest.outbox import OutboxConsumer

        return OutboxConsumer(url), options
    if scheme in ("amqp", "amqps"):
        from clarion.ingest.amqp import AmqpConsumer

        return AmqpConsumer(url, prefetch=options.get("batch", 1000)), options
    if scheme in ("nats", "tls"):
        from clarion.ingest.jetstream import JetStreamConsumer

        return JetStreamConsumer(url, pending=options.get("batch", 1000)), options
    if scheme in ("redis", "rediss"):
        from clarion.ingest.redis_streams import RedisStreamConsumer

        return RedisStreamConsumer(url), options
    raise ValueError(f"unsupported consumer URL {label(url)!r}: use {SCHEMES}")


class Consumers:
    """The node's consumers: started with it, stopped (drained) before its store closes."""

    def __init__(self, urls: list[str], publish: Publish, ready: Ready) -> None:
        self.loops: list[ConsumerLoop] = []
        for url in urls:
            consumer, options = open_consumer(url)
            self.loops.append(ConsumerLoop(consumer, publish, ready, **options))

    def start(self) -> None:
        """Each loop connects on its own: a source that is down delays nothing else."""
        for loop in self.loops:
            loop.start()

    async def stop(self) -> None:
        await asyncio.gather(*(loop.stop() for loop in self.loops))

    def status(self) -> list[dict[str, Any]]:
        return [loop.status() for loop in self.loops]


__all__ = [
    "Consumer",
    "ConsumerLoop",
    "Consumers",
    "Message",
    "Outcome",
    "open_consumer",
    "split_params",
]
