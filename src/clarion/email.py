"""The email channel: messages built from templates, sent over SMTP from the outbox.

Every node runs one sender (`Mailer.run`). It claims due rows of the email outbox
(store/email.py), builds each message (the type's template for the recipient's locale, else the
built-in one), sends them over a few SMTP connections (aiosmtplib; `smtps://` is TLS from the
start, `smtp://` upgrades with STARTTLS when offered) and records replies in commits made
while the batch goes on (`_Settler`): a 250 removes the row; a 4xx reply or a network error is
retried with exponential backoff up to `email_max_attempts`; a permanent 5xx drops it and
marks the address bad.

Each message carries a `Message-ID` derived from the notification id and the user, so a
repeat after a crash is recognisably the same message, and RFC 8058 one-click unsubscribe
headers pointing at a Clarion URL signed with a key kept in the store (`unsubscribe_url`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.utils import formataddr, formatdate, parseaddr
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlencode, urljoin, urlsplit

import aiosmtplib

from clarion import templates
from clarion.config import Settings
from clarion.domain import Profile, TypeSettings, utcnow
from clarion.preferences import DEFAULT
from clarion.push import RecallCheck
from clarion.store import SQLStore
from clarion.store.email import DueEmail, EmailOutcome, Key
from clarion.store.webhooks import NO_HOOKS, Hooks
from clarion.tasks import drain_loop

if TYPE_CHECKING:
    from clarion.webhooks import Webhooks

log = logging.getLogger("clarion.email")

BATCH = 50
CONNECTIONS = 4  # SMTP connections a sender uses at once
MAX_RETRY = 3600.0

BUTTON = (
    "display:inline-block;padding:8px 14px;margin:4px 8px 4px 0;border-radius:6px;"
    "background:#2557d6;color:#fff;text-decoration:none"
)
BUILTIN_HTML = """<!doctype html>
<html lang="{{ lang }}"><body style="font-family:system-ui,sans-serif;max-width:560px">
<h1 style="font-size:20px">{{ title }}</h1>
{% if body %}<p style="white-space:pre-line">{{ body }}</p>{% endif %}
{% for a in actions %}{% if a.url %}<a href="{{ a.url }}" style="{{ button }}">{{ a.label }}</a>
{% endif %}{% endfor %}
{% if url %}<p><a href="{{ url }}">{{ url }}</a></p>{% endif %}
<hr><p style="font-size:12px;color:#666">
<a href="{{ unsubscribe }}">Unsubscribe</a> from these emails.</p>
</body></html>"""
BUILTIN_TEXT = """{{ title }}
{% if body %}
{{ body }}
{% endif %}{% for a in actions %}{% if a.url %}
{{ a.label }}: {{ a.url }}{% endif %}{% endfor %}{% if url %}

{{ url }}{% endif %}

--
Unsubscribe: {{ unsubscribe }}
"""


def sign(key: str, user: str, type: str) -> str:
    mac = hmac.new(key.encode(), f"{user}\x00{type}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac[:18]).decode()


def verify(key: str, user: str, type: str, signature: str) -> bool:
    return hmac.compare_digest(sign(key, user, type).encode(), signature.encode())


def unsubscribe_url(base: str, key: str, user: str, type: str) -> str:
    query = urlencode({"u": user, "t": type, "s": sign(key, user, type)})
    return f"{base.rstrip('/')}/v1/unsubscribe?{query}"


def message_id(notification_id: str, user: str, domain: str) -> str:
    """Stable per notification and recipient: a resend is the same message."""
    tag = hashlib.sha256(user.encode()).hexdigest()[:12]
    return f"<{notification_id}.{tag}@{domain}>"


def _link(url: Any, app_url: str | None) -> str | None:
    """Absolute links as they are; relative ones against the app's URL, else left out."""
    if not isinstance(url, str) or not url:
        return None
    if urlsplit(url).scheme in ("http", "https"):
        return url
    return urljoin(app_url, url) if app_url else None


def build(
    doc: Mapping[str, Any],
    profile: Profile,
    rules: TypeSettings,
    *,
    sender: str,
    unsubscribe: str,
    app_url: str | None = None,
) -> EmailMessage:
    """One multipart (text + HTML) message for one recipient."""
    actions = [{**a, "url": _link(a.get("url"), app_url)} for a in doc.get("actions") or [] if a]
    context = {
        **doc,
        "url": _link(doc.get("url"), app_url),
        "actions": actions,
        "unsubscribe": unsubscribe,
        "user": {
            "id": profile.id,
            "name": profile.name,
            "email": profile.email,
            "locale": profile.locale,
            "timezone": profile.timezone,
            "data": profile.data,
        },
    }
    parts: dict[str, str] = {}
    lang = rules.locale
    try:
        found = templates.render(rules.templates, "email", profile.locale, rules.locale, context)
    except Exception:  # checked at PUT; real data may still trip one: the built-in goes out
        log.warning("email template of type %s failed; built-in used", rules.type, exc_info=True)
        found = None
    if found is not None:
        lang, parts = found
    context["lang"], context["button"] = lang, BUTTON
    subject = parts.get("subject") or templates.render_part("subject", "{{ title }}", context)
    text = parts.get("text") or templates.render_part("text", BUILTIN_TEXT, context)
    html = parts.get("html") or templates.render_part("html", BUILTIN_HTML, context)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "localhost"
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = formataddr((profile.name or "", profile.email or ""))
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id(str(doc["id"]), profile.id, domain)
    msg["List-Unsubscribe"] = f"<{unsubscribe}>"
    msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    msg["Content-Language"] = lang  # after: making it multipart moves Content-* headers down
    return msg


class Mailer:
    """The email sender of one node."""

    def __init__(self, store: SQLStore, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.key = ""  # the unsubscribe signing key, shared by every node (start)
        self.sent = self.failed = self.bad = 0
        self.webhooks: Webhooks | None = None  # control.py's: email's webhook events go there
        self._wake = asyncio.Event()

    @property
    def base(self) -> str:
        s = self.settings
        return s.public_url or f"http://{s.host}:{s.port}"

    async def start(self) -> None:
        self.key = await self.store.setting("unsubscribe_key", lambda: secrets.token_urlsafe(32))

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Sweep due escalations into the outbox, send due emails; again while busy."""
        beat = self.settings.offline_beat()

        async def step() -> bool:
            queued = await self.store.sweep(utcnow(), beat)
            return await self.flush() >= BATCH or queued >= 100

        await drain_loop(self._wake, self.settings.email_interval, step, "email sender")

    async def flush(self, now: datetime | None = None) -> int:
        """Send one batch of due emails (run once); returns how many rows it claimed."""
        now = now or utcnow()
        due = await self.store.email.claim(now, BATCH, 2 * self.settings.email_timeout)
        if not due:
            return 0
        types = await self.store.type_settings()
        hooks = await self.webhooks.hooks() if self.webhooks else NO_HOOKS
        settler = _Settler(self.store, hooks)
        check = RecallCheck(self.store.push.recalled, [d.notification_id for d in due])
        # A few SMTP connections side by side: one exchange waits on several round trips.
        groups = [due[i::CONNECTIONS] for i in range(CONNECTIONS)]
        try:
            sends = (self._send(g, types, now, settler, check) for g in groups if g)
            await asyncio.gather(*sends)
        finally:
            await settler.close()
            if self.webhooks and settler.queued:
                self.webhooks.queued()
        return len(due)

    async def _send(
        self,
        group: list[DueEmail],
        types: Mapping[str, TypeSettings],
        now: datetime,
        settler: _Settler,
        check: RecallCheck,
    ) -> None:
        """One connection's share of a batch, message after message; a message whose
        notification was recalled since the claim is not sent (asked right before it)."""
        smtp: aiosmtplib.SMTP | None = None
        try:
            for d in group:
                if await check.recalled(d.notification_id):
                    settler.recalled(d)
                    continue
                smtp = await self._one(smtp, d, types, now, settler)
        finally:
            if smtp is not None:
                with contextlib.suppress(Exception):
                    await smtp.quit()

    async def _one(
        self,
        smtp: aiosmtplib.SMTP | None,
        d: DueEmail,
        types: Mapping[str, TypeSettings],
        now: datetime,
        out: _Settler,
    ) -> aiosmtplib.SMTP | None:
        p = d.profile
        if self.settings.smtp_url is None or d.doc is None or p is None or not p.email:
            out.done(d.key)  # nowhere to send, or nothing to send any more
            return smtp
        if p.email_status == "bad":
            out.done(d.key)
            return smtp
        kind = str(d.doc.get("type", ""))
        rules = types.get(kind, DEFAULT)
        try:
            msg = build(
                d.doc,
                p,
                rules,
                sender=self.settings.email_from,
                unsubscribe=unsubscribe_url(self.base, self.key, p.id, kind),
                app_url=self.settings.app_url,
            )
        except Exception as exc:
            log.exception("email %s could not be built; dropped", d.notification_id)
            self.failed += 1
            out.failed(d, f"template: {type(exc).__name__}")
            return smtp
        try:
            if smtp is None:
                smtp = self._client()
                await smtp.connect()
            await smtp.send_message(msg)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            first = exc.recipients[0] if exc.recipients else None
            code, text = (first.code, first.message) if first else (450, str(exc))
            self._refused(d, code, text, now, out)
            return await _reset(smtp)
        except aiosmtplib.SMTPResponseException as exc:
            self._refused(d, exc.code, exc.message, now, out)
            return await _reset(smtp)
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            self._retry(d, now, out, type(exc).__name__)
            if smtp is not None:
                smtp.close()
            return None
        self.sent += 1
        out.sent(d)
        return smtp

    def _refused(self, d: DueEmail, code: int, text: str, now: datetime, out: _Settler) -> None:
        if 500 <= code < 600:
            self.bad += 1
            log.warning("email to user %s refused for good (%d %s)", d.user_id, code, text[:200])
            out.bad(d, code, text[:200])
        else:
            self._retry(d, now, out, f"SMTP {code}")

    def _retry(self, d: DueEmail, now: datetime, out: _Settler, reason: str) -> None:
        if d.attempts >= self.settings.email_max_attempts:
            self.failed += 1
            log.warning(
                "email %s to user %s given up after %d attempts (%s)",
                d.notification_id,
                d.user_id,
                d.attempts,
                reason,
            )
            out.failed(d, f"{reason} after {d.attempts} attempts")
            return
        delay = min(MAX_RETRY, self.settings.email_retry_seconds * 2 ** (d.attempts - 1))
        delay = delay / 2 + random.uniform(0, delay / 2)
        out.later(d.key, now + timedelta(seconds=delay))

    def _client(self) -> aiosmtplib.SMTP:
        url = urlsplit(self.settings.smtp_url or "")
        tls = url.scheme == "smtps"
        return aiosmtplib.SMTP(
            hostname=url.hostname or "localhost",
            port=url.port or (465 if tls else 25),
            username=unquote(url.username) if url.username else None,
            password=unquote(url.password) if url.password else None,
            use_tls=tls,
            timeout=self.settings.email_timeout,
        )


class _Settler:
    """Commits outcomes while the batch is still sending (a group commit).

    Settling once at the end of a batch would leave every message of it sent but not
    recorded until the last one is; a node killed then resends them all. Here each commit
    takes whatever replies came in since the last one, so what a crash can resend is what
    was in flight plus one commit's worth, at a handful of transactions per batch.
    """

    def __init__(self, store: SQLStore, hooks: Hooks) -> None:
        self.store = store
        self.hooks = hooks
        self.queued = False  # some webhook event was queued: the webhook sender is woken
        self.outcome = EmailOutcome([], [], [])
        self._ready = asyncio.Event()
        self._closing = False
        self._task = asyncio.create_task(self._loop())

    def done(self, key: Key) -> None:
        """Nothing to send any more (no address, a bad one, the notification gone)."""
        self.outcome.done.append(key)
        self._ready.set()

    def sent(self, d: DueEmail) -> None:
        self.outcome.logged.append((d.notification_id, d.user_id, "emailed", None))
        self.done(d.key)

    def recalled(self, d: DueEmail) -> None:
        self.outcome.logged.append((d.notification_id, d.user_id, "recalled", None))
        self.done(d.key)

    def failed(self, d: DueEmail, why: str) -> None:
        """Given up: the row goes, the log says why, `delivery.failed` is told."""
        self.outcome.logged.append((d.notification_id, d.user_id, "failed", why))
        self.done(d.key)

    def later(self, key: Key, when: datetime) -> None:
        self.outcome.later.append((key, when))
        self._ready.set()

    def bad(self, d: DueEmail, code: int, why: str) -> None:
        """Refused for good: the row goes, the address is marked bad, `email.bounced`."""
        self.outcome.bad.append(d.key)
        self.outcome.logged.append((d.notification_id, d.user_id, "failed", f"SMTP {code} {why}"))
        self.outcome.bounced.append((d.notification_id, d.user_id, code, why))
        self._ready.set()

    async def _commit(self) -> None:
        taken, self.outcome = self.outcome, EmailOutcome([], [], [])
        if taken:
            await self.store.email.settle(taken, self.hooks, utcnow())
            self.queued = self.queued or any(self.hooks.wants(e.name) for e in taken.events)

    async def _loop(self) -> None:
        while not self._closing:
            await self._ready.wait()
            self._ready.clear()
            await self._commit()

    async def close(self) -> None:
        """Let a commit under way finish, then commit what is left (after the last reply)."""
        self._closing = True
        self._ready.set()
        await self._task
        await self._commit()


async def _reset(smtp: aiosmtplib.SMTP | None) -> aiosmtplib.SMTP | None:
    """After a refused message the session goes on with RSET; a broken one is dropped."""
    if smtp is None:
        return None
    try:
        await smtp.rset()
        return smtp
    except Exception:
        smtp.close()
        return None
