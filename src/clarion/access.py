"""Access and audit lines: one per HTTP request, one per live session's end, one per admin change.

Each carries a request id (the caller's `X-Request-ID` when it looks like one, else a new one,
echoed in the response) so a support person can follow one request through every line. What is
logged is chosen field by field: the path without its query string (tickets and cursors travel
there), ids of keys and users, never a header, token, key, ticket or cookie.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.logs import REQUEST_ID, new_request_id

if TYPE_CHECKING:
    from clarion.domain import ApiKey
    from clarion.hub import Session

access_log = logging.getLogger("clarion.access")
audit_log = logging.getLogger("clarion.audit")
GOOD_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# Sinks are the transports' own classes; the hub knows them only by this name.


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            return text if GOOD_ID.match(text) else new_request_id()
    return new_request_id()


class AccessLog:
    """Plain ASGI: times the whole response (a stream's too) and logs one line at its end."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope)
        token = REQUEST_ID.set(request_id)
        if scope["type"] == "websocket":  # its line is the session's end (`session_ended`)
            try:
                await self.app(scope, receive, send)
            finally:
                REQUEST_ID.reset(token)
            return
        started = time.monotonic()
        status = 500
        sent = 0

        async def logged(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                sent += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, logged)
        finally:
            log_request(scope, status, started, sent)
            REQUEST_ID.reset(token)


def log_request(scope: Scope, status: int, started: float, sent: int) -> None:
    """The access line of one HTTP request (also for requests answered outside the ASGI
    middleware, transports/http.py's fast publish). Built only when it is written: at level
    warning a publish costs no line."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    state = scope.get("state") or {}
    fields: dict[str, Any] = {
        "event": "request",
        "method": scope["method"],
        "path": scope["path"],
        "status": status,
        "duration_ms": round((time.monotonic() - started) * 1000, 2),
        "bytes": sent,
        "client": scope["client"][0] if scope.get("client") else None,
    }
    if "who" in state:
        fields["who"] = state["who"]
    access_log.info("%s %s %d", scope["method"], scope["path"], status, extra={"fields": fields})


def transport_of(session: Session) -> str:
    """The sink's own name for its transport (`via`), as presence and the delivery log say it."""
    via = getattr(session.sink, "via", None)
    return via if isinstance(via, str) else type(session.sink).__name__


def session_ended(session: Session) -> None:
    """The line for a WebSocket, SSE or long-poll session: who, how, how long, how much."""
    if not access_log.isEnabledFor(logging.INFO):
        return  # (a mass disconnect at level warning costs nothing)
    transport = transport_of(session)
    fields = {
        "event": "session",
        "transport": transport,
        "user": session.user,
        "duration_ms": round((time.monotonic() - session.started) * 1000, 2),
        "events_sent": session.sent,
        "close_code": session.close_code,
        "request_id": session.request_id,
    }
    access_log.info("%s session of %s ended", transport, session.user, extra={"fields": fields})


def audit(who: ApiKey, action: str, target: str, before: Any, after: Any) -> None:
    """An admin change: which key did what to what, and the state before and after."""
    fields = {
        "event": "audit",
        "who": who.id,
        "who_name": who.name,
        "action": action,
        "target": target,
        "before": before,
        "after": after,
    }
    audit_log.info("%s %s by key %s", action, target, who.id, extra={"fields": fields})
