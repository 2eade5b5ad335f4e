"""Redis Streams (redis-py): a consumer group on the app's stream.

`XREADGROUP` hands entries to this consumer; `XACK` follows Clarion's commit. An entry read and
not acked (crash, store down) stays pending: this consumer reads its own pending entries first
(on start, and after a failure), and takes over, with `XAUTOCLAIM`, those another consumer left
pending for longer than `claim_idle` seconds (a dead node). The idempotency key is the entry
id. The body is the entry's `payload` field (`field=` names another). An entry that can never
be published is added to `<stream>:dead` with its error, then acked, in one MULTI.

A node that restarts under the same `consumer=` name takes its own pending entries back at
once and in order; under a new name it claims them after `claim_idle`.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from clarion.ingest.base import Message, Outcome, source_id


class RedisStreamConsumer:
    def __init__(self, url: str) -> None:
        from clarion.ingest import label, split_params

        self.url, params = split_params(
            url, {"stream", "group", "consumer", "field", "claim_idle", "dead_letter", "source"}
        )
        if not params.get("stream"):
            raise ValueError(f"consumer {label(url)}: name the stream (?stream=notifications)")
        self.stream = params["stream"]
        self.group = params.get("group", "clarion")
        self.consumer = params.get("consumer") or f"{socket.gethostname()}-{os.getpid()}"
        self.field = params.get("field", "payload")
        self.claim_idle = float(params.get("claim_idle", "30"))
        self.dead_stream = params.get("dead_letter", f"{self.stream}:dead")
        self.name = label(url)
        parts = urlsplit(self.url)
        where = f"{parts.hostname}:{parts.port or 6379}{parts.path}/{self.stream}/{self.group}"
        self.source = params.get("source") or source_id("redis", where)
        self._client: Any = None
        self._own_pending = True  # read what this consumer was handed and never acked, first
        self._claim_at = 0.0

    async def connect(self) -> None:
        self._client = aioredis.Redis.from_url(self.url, socket_connect_timeout=5)
        try:
            await self._client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._own_pending = True
        self._claim_at = 0.0

    async def fetch(self, limit: int, wait: float) -> list[Message]:
        if self._own_pending:
            entries = await self._read("0", limit, None)
            if entries:
                return entries
            self._own_pending = False
        if time.monotonic() >= self._claim_at:
            self._claim_at = time.monotonic() + max(self.claim_idle / 2, 0.1)
            claimed = await self._client.xautoclaim(
                self.stream,
                self.group,
                self.consumer,
                min_idle_time=int(self.claim_idle * 1000),
                start_id="0-0",
                count=limit,
            )
            if entries := self._messages(claimed[1]):
                self._own_pending = True  # now ours: read them (in order) with the rest
                return entries
        return await self._read(">", limit, max(1, int(wait * 1000)))

    async def _read(self, start: str, limit: int, block: int | None) -> list[Message]:
        answer = await self._client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=limit, block=block
        )
        return self._messages(answer[0][1] if answer else [])

    def _messages(self, entries: list[Any]) -> list[Message]:
        out = []
        for entry_id, fields in entries:
            id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            # A pending entry trimmed away since (XTRIM, MAXLEN) reads back without fields.
            body = (fields or {}).get(self.field.encode(), b"")
            out.append(Message(id, body, id))
        return out

    async def settle(self, outcome: Outcome) -> None:
        async with self._client.pipeline(transaction=True) as pipe:
            for message, error in outcome.dead:
                pipe.xadd(
                    self.dead_stream,
                    {
                        self.field: message.body,
                        "error": orjson.dumps(error),
                        "stream": self.stream,
                        "id": message.handle,
                    },
                )
            settled = [m.handle for m in outcome.done] + [m.handle for m, _ in outcome.dead]
            if settled:
                pipe.xack(self.stream, self.group, *settled)
            await pipe.execute()
        if outcome.retry:
            self._own_pending = True  # still pending to us: read them again next

    async def lag(self) -> int | None:
        """Entries pending (handed out, not acked) plus those not yet handed to the group."""
        for group in await self._client.xinfo_groups(self.stream):
            name = group.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.group:
                return int(group.get("pending") or 0) + int(group.get("lag") or 0)
        return None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()
