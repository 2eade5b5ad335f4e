"""The Web Push sender (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID).

Every node runs one: it claims due rows of the outbox (store/push.py) in batches, encrypts each
push for its browser (pywebpush, aes128gcm), signs a VAPID token for the push service's origin
(py-vapid, ES256), sends the batch, at most `push_concurrency` at once, and records the
outcomes in one transaction, with their delivery log rows (channel `push`) and `delivery.failed`
webhook events: sent rows go; 404/410 remove the subscription; 429, 5xx, timeouts and network
errors are retried with exponential backoff (and the service's Retry-After) up to a bounded
number of attempts; other 4xx drop that push. A publish wakes its own node's sender at once;
the others look every `push_interval` seconds.

A notification recalled after its pushes were claimed is not pushed: right before a push goes
out, the sender asks the store which of the batch's notifications were recalled since (one
query for the pushes that start together, `RecallCheck`); the log then says `recalled`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from clarion import preferences as rules
from clarion import tracing
from clarion.config import Settings
from clarion.domain import utcnow
from clarion.egress import PublicTransport, RefusedAddress
from clarion.store import SQLStore
from clarion.store.push import Due, Outcome
from clarion.store.webhooks import NO_HOOKS
from clarion.tasks import drain_loop

if TYPE_CHECKING:
    from clarion.webhooks import Webhooks

log = logging.getLogger("clarion.push")

BATCH = 50  # rows claimed at once, all sent concurrently
MAX_PAYLOAD = 3000  # bytes of JSON: under the 4096-byte push limit once encrypted, with room
MAX_RETRY = 3600.0  # seconds: the longest wait between two attempts
URGENCY = {"low": "very-low", "normal": "normal", "high": "high", "critical": "high"}
PAYLOAD_FIELDS = ("id", "type", "priority", "title", "body", "url", "icon")
# What gives way, in order, when a push is too large: (field, the length it keeps).
TRIM_ORDER = (("body", 200), ("icon", 0), ("body", 0), ("title", 0), ("url", 0))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def new_private_key() -> str:
    """A P-256 private key as raw base64url (32 bytes), the form py-vapid reads back."""
    key = ec.generate_private_key(ec.SECP256R1())
    return b64url(key.private_numbers().private_value.to_bytes(32, "big"))


def load_key(value: str) -> Vapid02:
    value = value.strip()
    if "-----BEGIN" in value:
        return Vapid02.from_pem(value.encode())
    return Vapid02.from_string(value)


def payload(doc: bytes) -> bytes:
    """What the service worker shows (sw.js): a few fields of the notification, trimmed to fit
    a push message."""
    full = orjson.loads(doc)
    out = {k: full.get(k) for k in PAYLOAD_FIELDS}
    data = orjson.dumps(out)
    for name, keep in TRIM_ORDER:
        while len(data) > MAX_PAYLOAD and out[name] and len(str(out[name])) > keep:
            over = len(data) - MAX_PAYLOAD
            value = str(out[name])
            # Links cut short would lead nowhere: they are dropped instead.
            out[name] = None if name in ("url", "icon") else value[: max(keep, len(value) - over)]
            data = orjson.dumps(out)
    return data


def topic(collapse_key: str) -> str:
    """RFC 8030 `Topic` (at most 32 base64url characters): a newer push with the same one
    replaces a pending older one at the push service, as collapse does in the inbox."""
    return b64url(hashlib.sha256(collapse_key.encode()).digest())[:32]


class RecallCheck:
    """Which of a claimed batch's notifications were recalled since the claim, asked right
    before each push goes out. Pushes that start together share one query (the one in
    flight); a push that waited for a free slot asks again when it gets one."""

    def __init__(self, probe: Callable[[list[str]], Awaitable[set[str]]], ids: list[str]) -> None:
        self._probe = probe
        self._ids = sorted(set(ids))
        self._next: asyncio.Future[set[str]] | None = None

    async def recalled(self, id: str) -> bool:
        if self._next is None or self._next.done():
            self._next = asyncio.ensure_future(self._probe(self._ids))
        return id in await asyncio.shield(self._next)


class Pusher:
    def __init__(self, store: SQLStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.public_key = ""  # the applicationServerKey browsers subscribe with (base64url)
        self.sent = self.failed = self.gone = 0
        self._vapid: Vapid02 | None = None
        self._tokens: dict[str, tuple[str, float]] = {}  # audience -> (header, expiry)
        self._wake = asyncio.Event()
        self.webhooks: Webhooks | None = None  # control.py's: `delivery.failed` goes there
        self.recalled = 0  # claimed pushes not sent: recalled in between

    @property
    def concurrency(self) -> int:
        return max(1, self.settings.push_concurrency)

    @property
    def batch(self) -> int:
        """Rows claimed at once: at most two rounds of sends, so the last starts within the
        lease (twice `push_timeout`)."""
        return min(BATCH, 2 * self.concurrency)

    @property
    def lease(self) -> float:
        return 2 * self.settings.push_timeout

    async def start(self) -> None:
        """Load the VAPID key: configured, or made once for the cluster and kept in the store."""
        value = self.settings.vapid_private_key or await self.store.setting(
            "vapid_private_key", new_private_key
        )
        self._vapid = load_key(value)
        point = self._vapid.public_key.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        self.public_key = b64url(point)

    def wake(self) -> None:
        self._wake.set()

    async def release(self, user: str) -> None:
        """The user's quiet hours changed: what they held back is looked at again now."""
        if await self.store.push.release(user, utcnow()):
            self.wake()

    async def run(self) -> None:
        """The sender loop (a task of `Node.start`; cancelled by `Node.stop`)."""
        # Straight to the resolved, checked address: no proxy from the environment, no redirect.
        transport = PublicTransport(self.concurrency, self.settings.push_allow_http_loopback)
        async with httpx.AsyncClient(
            transport=transport,
            timeout=self.settings.push_timeout,
            follow_redirects=False,
            trust_env=False,
        ) as client:

            async def step() -> bool:
                return await self.flush(client) >= self.batch

            await drain_loop(self._wake, self.settings.push_interval, step, "push sender")

    async def flush(self, client: httpx.AsyncClient) -> int:
        """Send one batch of due pushes; returns how many rows it claimed."""
        now = utcnow()
        due = await self.store.push.claim(now, self.batch, self.lease)
        if not due:
            return 0
        outcome = Outcome([], [], [])
        check = RecallCheck(self.store.push.recalled, [d.notification_id for d in due])
        slots = asyncio.Semaphore(self.concurrency)
        await asyncio.gather(*(self._guarded(client, d, now, outcome, check, slots) for d in due))
        hooks = await self.webhooks.hooks() if self.webhooks else NO_HOOKS
        await self.store.push.settle(outcome, hooks, utcnow())
        if self.webhooks and hooks.wants("delivery.failed") and outcome.failed:
            self.webhooks.queued()
        return len(due)

    async def _guarded(
        self,
        client: httpx.AsyncClient,
        d: Due,
        now: datetime,
        out: Outcome,
        check: RecallCheck,
        slots: asyncio.Semaphore,
    ) -> None:
        """A push that fails in an unforeseen way still counts its attempts: it cannot loop."""
        attrs = {"clarion.notification_id": d.notification_id, "clarion.attempt": d.attempts}
        try:
            with tracing.span("clarion.push.send", **attrs):
                await self._send(client, d, now, out, check, slots)
        except Exception as exc:
            log.exception("push %s failed", d.notification_id)
            self._retry(d, now, out, type(exc).__name__, None)

    async def _send(
        self,
        client: httpx.AsyncClient,
        d: Due,
        now: datetime,
        out: Outcome,
        check: RecallCheck,
        slots: asyncio.Semaphore,
    ) -> None:
        expired = d.expires_at is not None and d.expires_at <= now
        if d.endpoint is None or d.doc is None or d.settled or expired:
            out.done.append(d.key)  # nothing to push any more
            return
        if d.priority != "critical" and (until := rules.quiet_until(d.prefs, now)):
            out.later.append((d.key, until, False))  # quiet hours began after the publish
            return
        ttl = self.settings.push_ttl
        if d.expires_at is not None:
            ttl = min(ttl, max(0, int((d.expires_at - now).total_seconds())))
        doc = orjson.loads(d.doc)
        headers = {
            "TTL": str(ttl),
            "Urgency": URGENCY.get(d.priority, "normal"),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self._authorization(d.endpoint),
        }
        if doc.get("collapse_key"):
            headers["Topic"] = topic(doc["collapse_key"])
        subscription = {"endpoint": d.endpoint, "keys": {"p256dh": d.p256dh, "auth": d.auth}}
        try:
            body = WebPusher(subscription).encode(payload(d.doc), "aes128gcm")["body"]
        except Exception as exc:  # keys that cannot encrypt will never work
            log.warning("push to %s dropped: cannot encrypt (%s)", _origin(d.endpoint), exc)
            self.failed += 1
            out.done.append(d.key)
            return
        try:
            async with slots:
                if await check.recalled(d.notification_id):  # since the claim
                    self.recalled += 1
                    out.done.append(d.key)
                    out.logged.append((d.notification_id, d.user_id, "recalled", None))
                    return
                async with asyncio.timeout(self.settings.push_timeout):
                    r = await client.post(d.endpoint, content=body, headers=headers)
        except RefusedAddress as exc:  # never to be sent there: the subscription goes
            log.warning("push subscription %s removed: %s", d.subscription_id, exc)
            self.failed += 1
            out.gone.append(d.subscription_id)
            return
        except (httpx.HTTPError, TimeoutError) as exc:
            self._retry(d, now, out, f"{type(exc).__name__}", None)
            return
        if r.status_code in (200, 201, 202):
            self.sent += 1
            out.done.append(d.key)
            out.logged.append((d.notification_id, d.user_id, "pushed", None))
        elif r.status_code in (404, 410):
            self.gone += 1
            out.gone.append(d.subscription_id)
            out.logged.append((d.notification_id, d.user_id, "failed", f"HTTP {r.status_code}"))
        elif r.status_code == 429 or r.status_code >= 500:
            self._retry(d, now, out, f"HTTP {r.status_code}", r.headers.get("retry-after"))
        else:
            self.failed += 1
            log.warning(
                "push to %s refused: HTTP %d %s",
                _origin(d.endpoint),
                r.status_code,
                r.text[:200],
            )
            out.done.append(d.key)
            reason = f"HTTP {r.status_code} {r.text[:200]}"
            out.logged.append((d.notification_id, d.user_id, "failed", reason))

    def _retry(
        self, d: Due, now: datetime, out: Outcome, reason: str, retry_after: str | None
    ) -> None:
        if d.attempts >= self.settings.push_max_attempts:
            self.failed += 1
            log.warning(
                "push %s to %s dropped after %d attempts (%s)",
                d.notification_id,
                _origin(d.endpoint or ""),
                d.attempts,
                reason,
            )
            out.done.append(d.key)
            out.logged.append((d.notification_id, d.user_id, "failed", reason))
            return
        delay = min(MAX_RETRY, self.settings.push_retry_seconds * 2 ** (d.attempts - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)  # spread retries of a busy moment
        if retry_after and retry_after.strip().isdigit():
            delay = max(delay, min(MAX_RETRY, float(retry_after)))
        out.later.append((d.key, now + timedelta(seconds=delay), True))

    def _authorization(self, endpoint: str) -> str:
        """`vapid t=<JWT>,k=<public key>` for the endpoint's origin, signed once an hour."""
        audience = _origin(endpoint)
        cached = self._tokens.get(audience)
        now = time.time()
        if cached is None or cached[1] - now < 11 * 3600:
            assert self._vapid is not None, "Pusher.start() loads the key"
            claims: dict[str, Any] = {
                "aud": audience,
                "exp": int(now) + 12 * 3600,
                "sub": self.settings.vapid_subject,
            }
            header = self._vapid.sign(claims)["Authorization"]
            cached = (str(header), now + 12 * 3600)
            self._tokens[audience] = cached
        return cached[0]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"
