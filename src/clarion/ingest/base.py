"""Consumers: the one small interface every source implements, and the loop they all share.

A consumer only moves messages: `fetch` a batch, then `settle` it (ack what was committed,
dead-letter what can never be published, hand back what failed for now). Everything else is
decided once, here, for every source: a message's body is validated exactly as the HTTP API
validates it (`PublishIn`, or a batch body's `notifications`), each notification gets an
idempotency key from the message's own id (scoped to its source, so two sources never collide),
the valid ones go through the node's publish path (group commit: a batch of messages shares a
transaction), and the message is acknowledged only after that commit. A crash between the commit
and the ack redelivers the message, and its key makes the replay create nothing.

`decode` and `outcome` are pure (no I/O); `ConsumerLoop.run_once` does one batch, so tests drive
a source without sleeping through the background loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from clarion.domain import ClarionError, Published, StoreUnavailable
from clarion.errors import field_of
from clarion.models import MAX_BATCH, PublishIn

log = logging.getLogger("clarion.ingest")

Publish = Callable[[PublishIn, str], Awaitable[Published]]
Ready = Callable[[], Awaitable[None]]
MAX_KEY = 128  # an idempotency key's length in the API (`PublishIn.idempotency_key`)
LAG_EVERY = 5.0  # seconds between two looks at a source's backlog
BACKOFF = (0.2, 5.0)  # first and longest wait before reconnecting or retrying the store


@dataclass(slots=True)
class Message:
    """One message as a source delivered it: its own id (the idempotency key of a body that
    names none), its body (JSON text), and what the source needs to settle it."""

    id: str | None
    body: bytes | str
    handle: Any = None


@dataclass(slots=True)
class Outcome:
    """What becomes of a fetched batch: acked, dead-lettered with its error, or handed back."""

    done: list[Message] = field(default_factory=list)
    dead: list[tuple[Message, dict[str, Any]]] = field(default_factory=list)
    retry: list[Message] = field(default_factory=list)
    unavailable: bool = False  # the store answered 503: pause until it answers again


class Consumer(Protocol):
    """A source of publish bodies; one module per kind, chosen by URL (`open_consumer`)."""

    name: str  # the URL without its password: the label in /metrics and /readyz
    source: str  # the scope of its idempotency keys (at most 32 characters)

    async def connect(self) -> None: ...
    async def fetch(self, limit: int, wait: float) -> list[Message]: ...
    async def settle(self, outcome: Outcome) -> None: ...
    async def lag(self) -> int | None: ...
    async def close(self) -> None: ...


def source_id(kind: str, identity: str) -> str:
    """A short, stable scope for a source's keys (the `publisher` column holds 32 characters)."""
    return f"in-{kind}-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


def _key(own: str | None, fallback: str | None) -> str | None:
    """The body's own key, else the message id; a longer one is hashed to fit."""
    key = own or fallback
    if key is not None and len(key) > MAX_KEY:
        key = hashlib.sha256(key.encode()).hexdigest()
    return key


def _invalid(exc: ValidationError, prefix: tuple[Any, ...] = ()) -> ClarionError:
    first = exc.errors()[0]
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    return ClarionError(422, "invalid", message, field_of((*prefix, *first.get("loc", ()))))


def decode(message: Message) -> list[PublishIn] | ClarionError:
    """The notifications a message holds, each with its idempotency key, or why it holds none.

    A body is what `POST /v1/notifications` takes, or what `POST /v1/notifications/batch`
    takes (`{"notifications": [...]}`, each item keyed `<message id>/<index>` unless it names
    its own key). A message is all or nothing: one invalid item dead-letters the whole message,
    so a replay never publishes half of it."""
    try:
        raw = orjson.loads(message.body)
    except orjson.JSONDecodeError as exc:
        return ClarionError(400, "invalid", f"the message is not JSON: {exc}")
    if not isinstance(raw, dict):
        return ClarionError(422, "invalid", "the message must be a JSON object")
    if "notifications" in raw:
        items = raw["notifications"]
        if set(raw) != {"notifications"}:
            extra = sorted(set(raw) - {"notifications"})[0]
            return ClarionError(422, "invalid", "extra field not permitted in a batch", extra)
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_BATCH:
            return ClarionError(
                422, "invalid", f"a list of 1 to {MAX_BATCH} notifications", "notifications"
            )
        out = []
        for i, item in enumerate(items):
            try:
                body = PublishIn.model_validate(item)
            except ValidationError as exc:
                return _invalid(exc, ("notifications", i))
            own = f"{message.id}/{i}" if message.id is not None else None
            out.append(_keyed(body, _key(body.idempotency_key, own)))
        return out
    try:
        body = PublishIn.model_validate(raw)
    except ValidationError as exc:
        return _invalid(exc)
    return [_keyed(body, _key(body.idempotency_key, message.id))]


def _keyed(body: PublishIn, key: str | None) -> PublishIn:
    return body if key == body.idempotency_key else body.model_copy(update={"idempotency_key": key})


def outcome(
    messages: list[Message], results: list[list[Published | BaseException] | ClarionError]
) -> Outcome:
    """Settle each message by what its notifications' publishes answered: all committed (or
    replays): ack; invalid, or refused for good (4xx: a key reused with another body): dead
    letter with the error; the store unavailable, or anything unexpected: hand it back."""
    out = Outcome()
    for message, result in zip(messages, results, strict=True):
        if isinstance(result, ClarionError):
            out.dead.append((message, result.body()["error"]))
            continue
        failures = [r for r in result if isinstance(r, BaseException)]
        if any(isinstance(f, StoreUnavailable) for f in failures):
            out.unavailable = True
            out.retry.append(message)
        elif transient := [f for f in failures if not _refused(f)]:
            log.warning("publish from a consumer failed (%r); retried later", transient[0])
            out.retry.append(message)
        elif failures:
            err = failures[0]
            assert isinstance(err, ClarionError)
            out.dead.append((message, err.body()["error"]))
        else:
            out.done.append(message)
    return out


def _refused(exc: BaseException) -> bool:
    """An answer no retry changes: a 4xx ClarionError (conflict, invalid)."""
    return isinstance(exc, ClarionError) and 400 <= exc.status < 500


@dataclass(slots=True)
class Counters:
    consumed: int = 0  # messages committed and acked
    failed: int = 0  # messages handed back to retry (store or source failure)
    dead_lettered: int = 0
    lag: int | None = None  # messages waiting at the source, as last seen
    state: str = "starting"  # running, paused (store unavailable), reconnecting, stopped
    error: str | None = None


class ConsumerLoop:
    """Runs one consumer: fetch, publish, settle; pauses while the store is down; reconnects
    to the source with backoff; stops gracefully (the batch in hand is finished and settled)."""

    def __init__(
        self,
        consumer: Consumer,
        publish: Publish,
        ready: Ready,
        batch: int = 1000,
        wait: float = 1.0,
    ) -> None:
        self.consumer = consumer
        self.publish = publish
        self.ready = ready
        self.batch = batch
        self.wait = wait
        self.counters = Counters()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._busy = False  # a fetched batch is in hand: finish it before stopping
        self._connected = False
        self._lag_at = 0.0

    async def run_once(self) -> int:
        """Fetch one batch, publish it, settle it; returns how many messages it held."""
        messages = await self.consumer.fetch(self.batch, self.wait)
        if not messages:
            return 0
        self._busy = True
        try:
            decoded = [decode(m) for m in messages]
            calls = [
                self.publish(body, self.consumer.source)
                for d in decoded
                if not isinstance(d, ClarionError)
                for body in d
            ]
            answers = iter(await asyncio.gather(*calls, return_exceptions=True))
            results: list[list[Published | BaseException] | ClarionError] = [
                d if isinstance(d, ClarionError) else [next(answers) for _ in d] for d in decoded
            ]
            settled = outcome(messages, results)
            await self.consumer.settle(settled)
        finally:
            self._busy = False
        c = self.counters
        c.consumed += len(settled.done)
        c.failed += len(settled.retry)
        c.dead_lettered += len(settled.dead)
        for message, error in settled.dead:
            log.warning("%s: message %s dead-lettered: %s", self.consumer.name, message.id, error)
        if settled.unavailable:
            await self._until_ready()
        return len(messages)

    async def _until_ready(self) -> None:
        """Backpressure: fetch nothing more while the store cannot commit."""
        self.counters.state = "paused"
        delay = BACKOFF[0]
        while not self._stopping:
            try:
                await self.ready()
                break
            except Exception:
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])
        self.counters.state = "running"

    async def _refresh_lag(self) -> None:
        if time.monotonic() < self._lag_at:
            return
        self._lag_at = time.monotonic() + LAG_EVERY
        try:
            self.counters.lag = await asyncio.wait_for(self.consumer.lag(), timeout=5)
        except Exception as exc:
            log.debug("%s: lag unknown (%r)", self.consumer.name, exc)

    async def run(self) -> None:
        """Until stopped: connect, then consume; a lost source is reconnected with backoff."""
        delay = BACKOFF[0]
        while not self._stopping:
            try:
                if not self._connected:
                    self.counters.state = "connecting"
                    await self.consumer.connect()
                    self._connected = True
                    self.counters.state, self.counters.error = "running", None
                    self._lag_at = 0.0
                await self._refresh_lag()
                await self.run_once()
                delay = BACKOFF[0]
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.counters.state, self.counters.error = "reconnecting", repr(exc)
                log.warning("%s: %r; reconnecting in %.1f s", self.consumer.name, exc, delay)
                await self._disconnect()
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF[1])

    async def _disconnect(self) -> None:
        self._connected = False
        with contextlib.suppress(Exception):
            await self.consumer.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self, grace: float = 10.0) -> None:
        """Graceful: fetch nothing more, finish and settle the batch in hand, close."""
        self._stopping = True
        task = self._task
        if task is not None:
            if not self._busy:
                task.cancel()  # waiting in fetch: what was fetched and not settled goes back
            with contextlib.suppress(asyncio.CancelledError, TimeoutError, Exception):
                await asyncio.wait_for(task, grace)
        await self._disconnect()
        self.counters.state = "stopped"

    def status(self) -> dict[str, Any]:
        c = self.counters
        return {
            "source": self.consumer.name,
            "state": c.state,
            "consumed": c.consumed,
            "failed": c.failed,
            "dead_lettered": c.dead_lettered,
            "lag": c.lag,
            "error": c.error,
        }
