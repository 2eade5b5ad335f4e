"""Outbound webhooks: signed POSTs to the app's backend when something happens to a
notification or a user (docs/control.md).

Each event becomes one outbox row per endpoint that wants it (store/webhooks.py); every node
runs a sender that claims due rows, signs each per the Standard Webhooks specification
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256>` over
`id.timestamp.body`, with the `standardwebhooks` package), and posts them concurrently through
the same public-address-only transport as Web Push (egress.py). A 2xx settles a row; anything
else is retried with exponential backoff and jitter, in order per user (a user's later events
wait for its earlier one). An endpoint that has failed for `webhook_disable_after` seconds
with no success in between is disabled, which its `GET` and the log report.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from standardwebhooks.webhooks import Webhook

from clarion.broker import Broker
from clarion.config import Settings
from clarion.domain import Meta, StoredEvent, utcnow
from clarion.egress import PublicTransport, RefusedAddress, canonical_host_error
from clarion.planner.schedule import backoff
from clarion.store.webhooks import Endpoint, Event, Hooks, Message, WebhookStore

__all__ = ["Event", "Webhooks", "new_secret", "signed", "url_error"]
from clarion.tasks import drain_loop

log = logging.getLogger("clarion.webhooks")

BATCH = 50
# Where a node that changed the endpoints tells the others to read them again (a hint through
# the broker: a node that misses it reads them again within `webhook_cache_seconds`).
CHANGED_STREAM = "control:webhooks"


def new_secret() -> str:
    """A signing secret in the `whsec_<base64>` form (24 random bytes)."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def url_error(url: str, allow_loopback: bool) -> str | None:
    """Why a receiver URL is refused (None: acceptable): https to a public host, or with
    `CLARION_WEBHOOK_ALLOW_LOOPBACK`, http(s) to 127.0.0.1 as well."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if allow_loopback and host == "127.0.0.1" and parts.scheme in ("http", "https"):
        return None
    if parts.scheme != "https":
        return "the webhook URL must be https"
    return canonical_host_error(host)


def signed(endpoint: Endpoint, message: Message, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for one message."""
    signature = Webhook(endpoint.secret).sign(message.id, now, message.payload.decode())
    return {
        "webhook-id": message.id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
        "user-agent": "Clarion-Webhooks",
    }


class Webhooks:
    def __init__(self, store: Any, settings: Settings) -> None:
        self.store = store  # the SQLStore (its `webhooks` room, and notifications for types)
        self.rooms: WebhookStore = store.webhooks
        self.settings = settings
        self.sent = self.failed = 0
        self._cache: tuple[float, Hooks] | None = None
        self._wake = asyncio.Event()

    def forget(self, _event: object = None) -> None:
        """The endpoints changed (here, or on another node: `CHANGED_STREAM`): read them
        again at the next change."""
        self._cache = None

    async def changed(self, broker: Broker) -> None:
        """The endpoints changed on this node: forget them here and tell the other nodes."""
        self.forget()
        try:
            await broker.publish(StoredEvent(CHANGED_STREAM, 0, b"", Meta("webhooks")))
        except Exception:
            log.warning("could not tell the other nodes that the webhooks changed", exc_info=True)

    async def hooks(self) -> Hooks:
        """The enabled endpoints, read again after a change (`forget`) or at the latest every
        `webhook_cache_seconds`: one query per node, not per change."""
        loop = asyncio.get_running_loop()
        if self._cache is None or self._cache[0] < loop.time():
            until = loop.time() + self.settings.webhook_cache_seconds
            self._cache = (until, await self.rooms.hooks())
        return self._cache[1]

    def queued(self) -> None:
        """Rows were queued (in some change's transaction): send them now."""
        self._wake.set()

    async def emit(self, events: list[Event], now: datetime | None = None) -> int:
        """Queue events that report no store change (live state) in a transaction of their
        own; returns how many rows."""
        if not events:
            return 0
        n = await self.rooms.emit(await self.hooks(), events, now or utcnow())
        if n:
            self.queued()
        return n

    async def run(self) -> None:
        """The sender loop (a task of the node)."""
        transport = PublicTransport(BATCH, self.settings.webhook_allow_loopback)
        async with httpx.AsyncClient(
            transport=transport,
            timeout=self.settings.webhook_timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:

            async def step() -> bool:
                return await self.flush(client) >= BATCH

            await drain_loop(self._wake, self.settings.webhook_interval, step, "webhook sender")

    async def flush(self, client: httpx.AsyncClient, now: datetime | None = None) -> int:
        """Send one batch of due messages (run once); returns how many it claimed."""
        now = now or utcnow()
        lease = 2 * self.settings.webhook_timeout
        due = await self.rooms.claim(now, BATCH, lease)
        if not due:
            return 0
        by_name = {e.name: e for e in await self.rooms.all()}
        results = await asyncio.gather(
            *(self._send(client, by_name.get(m.webhook), m) for m in due)
        )
        sent, failed, attempts = [], [], []
        for m, (status, error) in zip(due, results, strict=True):
            attempts.append(
                {
                    "webhook": m.webhook,
                    "message_id": m.id,
                    "event": m.event,
                    "at": now,
                    "attempt": m.attempts,
                    "status": status,
                    "error": error,
                }
            )
            if error is None:
                sent.append(m)
                self.sent += 1
            else:
                self.failed += 1
                delay = backoff(m.attempts, self.settings.webhook_retry_seconds)
                delay = delay / 2 + random.uniform(0, delay / 2)
                failed.append((m, now + timedelta(seconds=delay)))
        disabled = await self.rooms.settle(
            sent, failed, attempts, now, self.settings.webhook_disable_after
        )
        for name in disabled:
            log.warning("webhook %s disabled: it has failed for too long", name)
        return len(due)

    async def _send(
        self, client: httpx.AsyncClient, endpoint: Endpoint | None, m: Message
    ) -> tuple[int | None, str | None]:
        """(HTTP status, error or None when delivered)."""
        if endpoint is None:
            return None, None  # the endpoint was deleted: the row just goes
        if endpoint.disabled_at is not None:
            return None, "endpoint disabled"
        try:
            async with asyncio.timeout(self.settings.webhook_timeout):
                r = await client.post(
                    endpoint.url, content=m.payload, headers=signed(endpoint, m, utcnow())
                )
        except RefusedAddress as exc:
            return None, str(exc)[:300]
        except (httpx.HTTPError, TimeoutError) as exc:
            return None, type(exc).__name__
        except Exception as exc:  # an unforeseen failure still counts as an attempt
            log.exception("webhook %s failed", m.id)
            return None, type(exc).__name__
        if 200 <= r.status_code < 300:
            return r.status_code, None
        return r.status_code, f"HTTP {r.status_code}"
