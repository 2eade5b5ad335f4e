"""The operator's console (`CLARION_CONSOLE=true`): its page at `/console` and the JSON it
reads under `/console/api`. Changes (keys, types, test sends) go through the public `/v1`
admin routes, which accept the console's session cookie with its CSRF token
(api/console_session.py); this module adds only what `/v1` has no route for: sign-in, the
live counters, and searches across users. Left out of the OpenAPI document: it serves one
page of this server, not integrations (they use `/v1` with an API key).
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field
from starlette.responses import FileResponse, Response

from clarion import preferences as rules
from clarion.access import audit
from clarion.api import console_session as sessions
from clarion.api.deps import get_node
from clarion.domain import ApiKey, BadRequest, NotFound, Unauthorized, iso, utcnow
from clarion.inbox import MAX_PAGE_CURSOR, PagePosition
from clarion.node import Node
from clarion.responses import JSON
from clarion.stats import connections_by_transport
from clarion.store.lookup import TYPE_WINDOW, Found
from clarion.streams import topic_of, topic_stream, user_stream

PAGE = Path(__file__).parents[1] / "static" / "console" / "index.html"
router = APIRouter(include_in_schema=False)
UserId = Annotated[str, Query(min_length=1, max_length=200)]


class SignIn(BaseModel):
    key: str = Field(min_length=1, max_length=200, description="an admin API key (clk_...)")


async def signed_in(request: Request, node: Node = Depends(get_node)) -> ApiKey:
    key = await sessions.session_key(request, node)
    if key is None:
        raise Unauthorized("sign in to the console")
    return key


def _key_out(key: ApiKey) -> dict[str, Any]:
    return {"id": key.id, "name": key.name, "scope": key.scope}


@router.get("/console")
async def page() -> FileResponse:
    # Its scripts come from this server only; no inline script, no frame, no plugin.
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    headers = {"Content-Security-Policy": csp, "Cache-Control": "no-store"}
    return FileResponse(PAGE, media_type="text/html", headers=headers)


@router.post("/console/api/session")
async def sign_in(body: SignIn, request: Request, node: Node = Depends(get_node)) -> Response:
    """Check the admin key once; answer with the session cookie and the CSRF token."""
    key = await node.keys.check(f"Bearer {body.key}", "admin")
    request.state.who = f"key:{key.id}"
    audit(key, "console.sign_in", f"key:{key.id}", None, {"expires_in": sessions.SESSION_SECONDS})
    secret = await sessions.secret(request, node)
    cookie = sessions.cookie_for(secret, key.id, time.time())
    response = JSON({"key": _key_out(key), "csrf": sessions.csrf_for(secret, cookie)})
    response.set_cookie(
        sessions.COOKIE,
        cookie,
        max_age=sessions.SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.get("/console/api/session")
async def session(
    request: Request, key: ApiKey = Depends(signed_in), node: Node = Depends(get_node)
) -> dict[str, Any]:
    """Who is signed in, and the CSRF token again (after a reload of the page)."""
    secret = await sessions.secret(request, node)
    csrf = sessions.csrf_for(secret, request.cookies[sessions.COOKIE])
    return {"key": _key_out(key), "csrf": csrf}


@router.delete("/console/api/session", status_code=204)
async def sign_out(key: ApiKey = Depends(signed_in)) -> Response:
    audit(key, "console.sign_out", f"key:{key.id}", None, None)
    response = Response(status_code=204)
    response.delete_cookie(sessions.COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.get("/console/api/live")
async def live(_: ApiKey = Depends(signed_in), node: Node = Depends(get_node)) -> dict[str, Any]:
    """Read once a second by the Live page: the cluster (every node's last snapshot, at most a
    second or so old; null when the store does not answer), the outbox backlogs (at most a few
    seconds old), and this node's own counters."""
    hub, pusher = node.hub, node.pusher
    outbox = await node.backlogs.read()
    try:
        cluster = await node.stats.cluster()
    except Exception:
        cluster = None
    handshakes = {
        t: {"p50": hub.handshakes.quantile(t, 0.5), "p99": hub.handshakes.quantile(t, 0.99)}
        for t in hub.handshakes.counts
    }
    return {
        "at": time.time(),
        "node": node.stats.name,
        "cluster": cluster,
        "connections": len(hub.sessions),
        "transports": connections_by_transport(node),
        "users": len(hub.per_user),
        "published": node.published,
        "delivered": hub.delivered,
        "slow_consumers": hub.dropped_slow,
        "broker": {
            "kind": node.settings.broker_url.split(":", 1)[0],
            "reconnects": hub.broker_resets,
            "failed_publishes": node.broker_failures,
        },
        "publish_seconds": {
            "p50": node.publish_times.quantile("publish", 0.5),
            "p99": node.publish_times.quantile("publish", 0.99),
        },
        "socket_seconds": {
            "p50": hub.socket_latency.quantile("socket", 0.5),
            "p99": hub.socket_latency.quantile("socket", 0.99),
        },
        "handshake_seconds": handshakes,
        "push": {"sent": pusher.sent, "failed": pusher.failed, "gone": pusher.gone},
        "outbox": {k: asdict(v) for k, v in outbox.items()} if outbox else None,
        "draining": node.draining,
    }


def _found(f: Found) -> dict[str, Any]:
    doc = f.doc
    return {
        "id": f.id,
        "type": f.type,
        "priority": f.priority,
        "created_at": iso(f.created_at),
        "publisher": f.publisher,
        "title": doc.get("title"),
        "body": doc.get("body"),
        "streams": f.streams,
        "doc": doc,
    }


@router.get("/console/api/notifications")
async def notifications(
    by: Literal["latest", "id", "user", "topic", "type", "idempotency_key"] = "latest",
    q: Annotated[str, Query(max_length=200)] = "",
    type: Annotated[str | None, Query(max_length=64)] = None,
    before: Annotated[str | None, Query(max_length=40, pattern=r"^[0-9A-Za-z]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    _: ApiKey = Depends(signed_in),
    node: Node = Depends(get_node),
) -> dict[str, Any]:
    """The latest, or a search; `next` is the `before` of the next page (null: the last)."""
    lookup = node.store.lookup
    q = q.strip()
    if by not in ("latest",) and not q:
        raise BadRequest(f"type what to look for by {by}", field="q")
    note = None
    next_page: str | None = None
    if by == "id":
        items = await lookup.by_id([q.upper()])
    elif by == "idempotency_key":
        items = await lookup.by_idempotency_key(q)
    elif by in ("user", "topic"):
        stream = user_stream(q) if by == "user" else topic_stream(q)
        seq = int(before) if before and before.isdigit() else None
        items, last = await lookup.by_stream(stream, limit, seq, type or None)
        next_page = str(last) if last is not None else None
    else:
        wanted = q if by == "type" else type
        items = await lookup.latest(limit, before, wanted or None)
        next_page = items[-1].id if len(items) == limit else None
        if wanted:
            note = f"by type: among the latest {TYPE_WINDOW:,} notifications of each page"
    return {"items": [_found(f) for f in items], "next": next_page, "note": note}


@router.get("/console/api/notifications/{id}")
async def notification(
    id: str, _: ApiKey = Depends(signed_in), node: Node = Depends(get_node)
) -> dict[str, Any]:
    """One notification, where it went and the states users gave it (where they acted)."""
    found = await node.store.lookup.by_id([id.upper()[:26]])
    if not found:
        raise NotFound(f"no notification {id}")
    marks = await node.store.lookup.marks_of(found[0].id)
    states = [{k: iso(v) if hasattr(v, "isoformat") else v for k, v in m.items()} for m in marks]
    return {**_found(found[0]), "states": states}


@router.get("/console/api/users/{user}")
async def user(
    user: str,
    filter: Literal["all", "unread", "archived"] = "all",
    cursor: Annotated[
        str | None, Query(max_length=MAX_PAGE_CURSOR, pattern=r"^[A-Za-z0-9_-]+$")
    ] = None,
    _: ApiKey = Depends(signed_in),
    node: Node = Depends(get_node),
) -> dict[str, Any]:
    """One user as the store and this node see it: inbox page, preferences, topics, pushes."""
    if not 0 < len(user) <= 200:
        raise BadRequest("a user id is 1 to 200 characters", field="user")
    try:
        position = PagePosition.decode(cursor)
    except ValueError as exc:
        raise BadRequest(str(exc), field="cursor") from None
    page = await node.store.list_inbox(user, filter, 25, position)
    prefs, settings = await node.store.preferences(user)
    types = {}
    for t in sorted(set(prefs.types) | set(settings)):
        in_app, push, mandatory, custom = rules.channels(t, prefs, settings)
        types[t] = {"in_app": in_app, "push": push, "mandatory": mandatory, "custom": custom}
    topics = [{"topic": topic_of(s) or s, "granted": g} for s, g in await node.store.followed(user)]
    pushes = await node.store.lookup.push_subscriptions(user)
    return {
        "user": user,
        "items": page.items,
        "next_cursor": page.next_cursor,
        "unread": page.unread,
        "connections_here": node.hub.per_user.get(user, 0),
        "preferences": {
            "timezone": prefs.timezone,
            "quiet_hours": [prefs.quiet_start, prefs.quiet_end] if prefs.quiet_start else None,
            "quiet_now": rules.quiet_now(prefs, utcnow()),
            "types": types,
        },
        "topics": topics,
        "push_subscriptions": [
            {"id": p["id"], "endpoint": p["endpoint"], "created_at": iso(p["created_at"])}
            for p in pushes
        ],
    }


@router.get("/console/api/topics/{topic:path}/followers")
async def followers(
    topic: str,
    after: Annotated[str | None, Query(max_length=200)] = None,
    _: ApiKey = Depends(signed_in),
    node: Node = Depends(get_node),
) -> dict[str, Any]:
    users = await node.store.followers(topic_stream(topic), after, 50)
    return {"topic": topic, "users": users, "next": users[-1] if len(users) == 50 else None}
