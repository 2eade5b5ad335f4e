"""The inbox's hot routes answered from Clarion's HTTP protocol, with the routes' own answers.

An open inbox asks for its unread count and first page on every page load and marks what its
user reads. Through FastAPI each of these paid about 1.5 ms of server CPU before and after the
store's work (the middleware, routing, the dependency graph, the response model's adapters):
more than the store's own work for most users (docs/benchmarks.md, issue #10). `FastInbox` is
`FastPublish`'s counterpart for them (api/lean.py): where Clarion's HTTP protocol would start
the ASGI app, a request the middleware would pass through unchanged (`lean.plain`), whose
token verifies (a verified token is cached: no parsing) and whose parameters the route would
accept as they are, is answered by the route's own function after the same limits in the same
order (the address's, the user's) and the same token sync (`Node.seen`). Everything else (a
JWKS key set, a token that does not verify, a parameter the route would refuse or read another
way) runs the whole app, so every error body and the OpenAPI document stay the routes'.
`tests/test_fast_inbox.py` holds the two answers equal.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.api import inbox
from clarion.api.deps import address_limit
from clarion.api.lean import plain, send_answer
from clarion.auth import Principal
from clarion.domain import ClarionError
from clarion.errors import render
from clarion.inbox import MAX_PAGE_CURSOR
from clarion.node import Node
from clarion.responses import JSON

PREFIX = "/v1/me/notifications"
Route = Callable[[Principal, Node], Awaitable[BaseModel]]
# The routes' own constraints on their parameters (api/inbox.py): anything else is left to them.
ID = re.compile(r"[0-9A-Z]{1,26}")
CURSOR = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_PAGE_CURSOR}}}")
FILTERS = frozenset(("all", "unread", "archived"))
MARKS = {"read": inbox.mark_read, "unread": inbox.mark_unread, "archive": inbox.archive}
WHOLE = {"read-all": inbox.read_all, "archive-all": inbox.archive_all, "seen-all": inbox.seen_all}


def route_of(method: str, path: str, query: bytes) -> Route | None:
    """The route function, its parameters bound, for a request the route would take with the
    parameters as given; None for any other (the app answers it, refusals included)."""
    if method == "GET":
        if path == "/v1/me/unread-count":
            return partial(_call, inbox.unread_count)
        if path == PREFIX:
            params = page_params(query)
            return None if params is None else partial(_page, params)
        return None
    if method != "POST" or not path.startswith(PREFIX + "/"):
        return None
    rest = path[len(PREFIX) + 1 :]
    if rest in WHOLE:
        return partial(_call, WHOLE[rest])
    id, _, verb = rest.partition("/")
    if verb in MARKS and ID.fullmatch(id):
        return partial(_mark, MARKS[verb], id)
    return None


def page_params(query: bytes) -> dict[str, Any] | None:
    """`filter`, `limit` and `cursor` as the route reads them, when each is one the route
    accepts as written (other names are ignored, as the route ignores them); else None."""
    try:
        pairs = parse_qsl(query.decode("ascii"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        return None
    names = [name for name, _ in pairs]
    params: dict[str, Any] = {}
    for name, value in pairs:
        if name not in ("filter", "limit", "cursor"):
            continue
        if names.count(name) > 1:
            return None
        if name == "filter" and value in FILTERS:
            params["filter"] = value
        elif name == "limit" and value.isdigit() and value == str(int(value)):
            if not 1 <= int(value) <= 100:
                return None
            params["limit"] = int(value)
        elif name == "cursor" and CURSOR.fullmatch(value):
            params["cursor"] = value
        else:
            return None
    return params


async def _call(fn: Any, me: Principal, node: Node) -> BaseModel:
    return await fn(me=me, node=node)  # type: ignore[no-any-return]


async def _page(params: dict[str, Any], me: Principal, node: Node) -> BaseModel:
    return await inbox.list_notifications(**params, me=me, node=node)


async def _mark(fn: Any, id: str, me: Principal, node: Node) -> BaseModel:
    return await fn(id=id, me=me, node=node)  # type: ignore[no-any-return]


class FastInbox:
    """`take` returns the app to run for a request: `serve`, bound to its route, or the app."""

    def __init__(self, node: Node, max_body: int, added: list[tuple[bytes, bytes]]) -> None:
        self.node = node
        self.max_body = max_body
        self.added = added  # the response headers the skipped middleware adds (app.py)

    def take(self, scope: Scope, app: ASGIApp) -> ASGIApp:
        if not scope["path"].startswith("/v1/me/") or self.node.tokens.jwks is not None:
            return app
        route = route_of(scope["method"], scope["path"], scope["query_string"])
        auth = plain(scope["headers"], self.max_body, body=False) if route else None
        if route is None or auth is None:
            return app
        try:  # a verified token is a cache hit (auth.Tokens.verify); refusals are the app's
            principal = self.node.tokens.verify(auth[7:])
        except Exception:  # (in the protocol's callback: the app answers it, refusals too)
            return app
        return partial(self.serve, route, principal, auth)

    async def serve(
        self, route: Route, me: Principal, auth: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        answer = partial(self.answer, route, me, auth, scope)
        await send_answer(self.added, scope, send, time.monotonic(), answer)

    async def answer(self, route: Route, me: Principal, auth: str, scope: Scope) -> JSON:
        """The limits and the token sync in the order of the routes' dependencies
        (`deps.client_ip`, then `deps.user`), then the route; its model as FastAPI sends it."""
        node = self.node
        client = scope.get("client")
        try:
            await address_limit(node, client[0] if client else "-", {"authorization": auth})
            scope.setdefault("state", {})["who"] = f"user:{me.user}"  # as `deps.user` sets it
            await node.limits.check("user", me.user)
            await node.seen(me)
            result = await route(me, node)
        except ClarionError as exc:
            return render(exc)
        return JSON(result.model_dump(mode="json"))
