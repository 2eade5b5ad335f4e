"""Console sessions: an admin API key, checked once at sign-in, becomes a signed cookie.

The cookie (`clarion_console`, HttpOnly, SameSite=Strict, Secure over HTTPS, path `/`) holds the
key's *id*, an expiry and an HMAC; never the key. Any node verifies it with a secret made once
per cluster and kept in the database (`server_settings`), and every request looks the key up
again, so revoking or expiring the key ends its console sessions at once. Every change (any
method but GET/HEAD) also needs the `X-CSRF-Token` header: an HMAC of the cookie that only the
signed-in page learns (from the sign-in answer), which a page on another site cannot send
(a custom header needs a CORS preflight this server refuses) nor read.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

from fastapi import Request

from clarion.domain import ApiKey, ClarionError, Forbidden, Unauthorized, utcnow
from clarion.node import Node

COOKIE = "clarion_console"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 8 * 3600
SAFE = ("GET", "HEAD", "OPTIONS")


async def secret(request: Request, node: Node) -> bytes:
    state = request.app.state
    if getattr(state, "console_secret", None) is None:
        value = await node.store.setting("console_session_key", lambda: secrets.token_hex(32))
        state.console_secret = value.encode()
    key: bytes = state.console_secret
    return key


def _mac(key: bytes, text: str) -> str:
    digest = hmac.new(key, text.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def cookie_for(key: bytes, key_id: str, now: float) -> str:
    body = f"{key_id}.{int(now) + SESSION_SECONDS}"
    return f"{body}.{_mac(key, body)}"


def csrf_for(key: bytes, cookie: str) -> str:
    return _mac(key, "csrf|" + cookie)


def parse(key: bytes, cookie: str, now: float) -> str:
    """The key id a valid, unexpired cookie names; Unauthorized otherwise."""
    parts = cookie.split(".")
    if len(parts) != 3 or not hmac.compare_digest(parts[2], _mac(key, f"{parts[0]}.{parts[1]}")):
        raise Unauthorized("console session invalid: sign in again")
    if not parts[1].isdigit() or int(parts[1]) < now:
        raise Unauthorized("console session expired: sign in again")
    return parts[0]


async def active_admin(node: Node, key_id: str) -> ApiKey:
    now = utcnow()
    for key in await node.store.list_keys():
        if key.id != key_id or key.revoked_at is not None:
            continue
        expires = key.expires_at
        if expires is not None and expires.replace(tzinfo=expires.tzinfo or now.tzinfo) <= now:
            break
        if key.scope != "admin":
            raise Forbidden("this API key lacks the admin scope")
        return key
    raise Unauthorized("the console session's API key was revoked or expired: sign in again")


async def session_key(request: Request, node: Node) -> ApiKey | None:
    """The admin key behind the request's console cookie; None without a cookie (or with the
    console off). A change without the right CSRF token is refused (403, field X-CSRF-Token)."""
    cookie = request.cookies.get(COOKIE)
    if not cookie or not node.settings.console:
        return None
    key = await secret(request, node)
    key_id = parse(key, cookie, time.time())
    if request.method not in SAFE:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent, csrf_for(key, cookie)):
            raise ClarionError(403, "csrf", "missing or wrong CSRF token", "X-CSRF-Token")
    admin = await active_admin(node, key_id)
    request.state.who = f"key:{admin.id}"
    return admin
