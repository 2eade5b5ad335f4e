"""The inbox's hot calls answered from Clarion's HTTP protocol (`FastInbox`, api/lean_inbox.py)
skip the ASGI app and answer exactly as the app does: the unread count, pages (filters,
limits, cursors), marks, read-all, archive-all, seen-all, and their refusals.

A real uvicorn server with `ClarionHttpProtocol` and the real app (`harness.inprocess`). The
reference answer for each request is the app's: the same request with a chunked (empty) body,
which the fast path leaves to the app. Changes are compared where a second one changes nothing
(a read of what is read), so both answers describe the same state.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from clarion.api import inbox
from clarion.api.lean_inbox import page_params, route_of
from clarion.client import mint_token
from clarion.config import Settings
from harness.inprocess import Live, publisher_key, serving

Answer = tuple[int, list[tuple[bytes, bytes]], Any]
VARYING = {b"date", b"x-request-id"}
SECRET = "s" * 40


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        jwt_secret=SECRET,
        rate_limit_user="1000/minute",
        max_body=4096,
    )
    async with serving(settings) as live:
        yield live


def bearer(user: str) -> str:
    return f"Bearer {mint_token(user, secret=SECRET, ttl=600)}"


async def published(live: Live, user: str, n: int) -> list[str]:
    """`n` notifications to `user`, published through the server; their ids."""
    auth = await publisher_key(live)
    ids = []
    async with httpx.AsyncClient(base_url=live.url) as client:
        for i in range(n):
            body = {"users": [user], "title": f"n{i}", "type": "mention" if i % 2 else "system"}
            r = await client.post("/v1/notifications", json=body, headers={"authorization": auth})
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
    return ids


async def call(
    client: httpx.AsyncClient, method: str, path: str, auth: str | None, *, app: bool = False
) -> Answer:
    """One request's answer (status, headers but the varying ones, JSON body); `app`: with a
    chunked empty body, which only the ASGI app takes."""

    async def nothing() -> AsyncIterator[bytes]:
        if False:  # pragma: no cover  (an empty chunked body)
            yield b""

    headers = {"authorization": auth} if auth is not None else {}
    r = await client.request(method, path, headers=headers, content=nothing() if app else None)
    kept = [(n.lower(), v) for n, v in r.headers.raw if n.lower() not in VARYING]
    assert {n.lower() for n, _ in r.headers.raw} >= VARYING
    return r.status_code, kept, r.json()


async def same(live: Live, client: httpx.AsyncClient, method: str, path: str, auth: str) -> Any:
    """The fast answer (the app not reached), equal to the app's; its body."""
    seen = live.app.http
    fast = await call(client, method, path, auth)
    assert live.app.http == seen, f"{method} {path} reached the ASGI app"
    reference = await call(client, method, path, auth, app=True)
    assert live.app.http == seen + 1
    assert fast == reference, (method, path)
    return fast[2]


async def test_hot_calls_skip_the_app_and_answer_as_the_app(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    ids = await published(live, "ann", 5)
    auth = bearer("ann")
    caplog.set_level(logging.INFO, logger="clarion.access")
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await same(live, client, "GET", "/v1/me/unread-count", auth))["unread"] == 5
        first = await same(live, client, "GET", "/v1/me/notifications?limit=2", auth)
        assert [n["id"] for n in first["items"]] == ids[::-1][:2]
        cursor = first["next_cursor"]
        assert cursor
        page = f"/v1/me/notifications?limit=2&filter=unread&cursor={cursor}&other=1"
        second = await same(live, client, "GET", page, auth)
        assert [n["id"] for n in second["items"]] == ids[::-1][2:4]
        read = await same(live, client, "POST", f"/v1/me/notifications/{ids[0]}/read", auth)
        assert (read["change"], read["unread"]) == ("read", 4)
        unread = await same(live, client, "POST", f"/v1/me/notifications/{ids[0]}/unread", auth)
        assert unread["unread"] == 5
        archived = await same(live, client, "POST", f"/v1/me/notifications/{ids[1]}/archive", auth)
        assert archived["unread"] == 4
        archived_page = await same(
            live, client, "GET", "/v1/me/notifications?filter=archived", auth
        )
        assert [n["id"] for n in archived_page["items"]] == [ids[1]]
        # (the one marked unread after it was listed counts as unseen again: inbox.unseen_views)
        seen_all = await same(live, client, "POST", "/v1/me/notifications/seen-all", auth)
        assert seen_all["unseen"] == 1
        assert (await same(live, client, "POST", "/v1/me/notifications/read-all", auth))[
            "unread"
        ] == 0
        everything = await same(live, client, "POST", "/v1/me/notifications/archive-all", auth)
        assert everything["change"] == "archive_all"
        assert (await same(live, client, "GET", "/v1/me/notifications", auth))["items"] == []
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]
    assert lines and {r.fields["who"] for r in lines} == {"user:ann"}  # type: ignore[attr-defined]
    assert {r.fields["status"] for r in lines} == {200}  # type: ignore[attr-defined]


async def test_refusals_are_the_apps_own(live: Live) -> None:
    """Parameters the route refuses (422) and tokens that do not verify (401) go to the app;
    refusals the route's own function makes (a cursor that does not decode, an unknown id)
    are answered on the fast path with the app's body."""
    ids = await published(live, "bob", 1)
    auth = bearer("bob")
    async with httpx.AsyncClient(base_url=live.url) as client:
        for path in (
            "/v1/me/notifications?filter=loud",
            "/v1/me/notifications?limit=0",
            "/v1/me/notifications?limit=101",
            "/v1/me/notifications?limit=two",
            "/v1/me/notifications?cursor=a%2Fb",
            "/v1/me/notifications?limit=2&limit=3",  # (one of the two, as the app reads it)
        ):
            seen = live.app.http
            answer = await call(client, "GET", path, auth)
            assert live.app.http == seen + 1, path
            assert answer[0] in (400, 422) or "limit=3" in path, (path, answer)
            assert answer == await call(client, "GET", path, auth, app=True)
        for auth_value in (None, "Bearer nope", "Basic abc", bearer("bob")[:-2] + "xx"):
            seen = live.app.http
            answer = await call(client, "GET", "/v1/me/unread-count", auth_value)
            assert answer[0] == 401 and live.app.http == seen + 1
        lowercase = f"/v1/me/notifications/{ids[0].lower()}/read"
        seen = live.app.http
        assert (await call(client, "POST", lowercase, auth))[0] == 422
        assert live.app.http == seen + 1
        bad_cursor = await same(live, client, "GET", "/v1/me/notifications?cursor=AAAA", auth)
        assert bad_cursor["error"]["field"] == "cursor"
        missing = "/v1/me/notifications/01AAAAAAAAAAAAAAAAAAAAAAAA/read"
        assert (await same(live, client, "POST", missing, auth))["error"]["code"] == "not_found"


@pytest.mark.parametrize("limit", ["rate_limit_user", "rate_limit_ip"])
async def test_over_a_limit_the_apps_429_with_retry_after(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, limit: str
) -> None:
    """The user's limit and the address's (which comes first, as the routers' dependency
    does): the app's 429 and `Retry-After`; past the address's limit the access line names no
    user, as the app's does not."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret=SECRET, **{limit: "5/minute"}
    )
    caplog.set_level(logging.INFO, logger="clarion.access")
    async with serving(settings) as live, httpx.AsyncClient(base_url=live.url) as client:
        auth = bearer("cy")
        for _ in range(5):
            assert (await call(client, "GET", "/v1/me/unread-count", auth))[0] == 200
        seen = live.app.http
        fast = await call(client, "GET", "/v1/me/unread-count", auth)
        assert live.app.http == seen
        reference = await call(client, "GET", "/v1/me/unread-count", auth, app=True)
        waits = [int(dict(a[1])[b"retry-after"]) for a in (fast, reference)]
        assert fast[0] == 429 and 0 <= waits[0] - waits[1] <= 1
        assert fast[2] == reference[2]
    refused = [
        r.fields  # type: ignore[attr-defined]
        for r in caplog.records
        if getattr(r, "fields", {}).get("status") == 429
    ]
    assert len(refused) == 2
    assert all(("who" in f) is (limit == "rate_limit_user") for f in refused)


@pytest.mark.parametrize(
    ("method", "path", "query", "taken"),
    [
        ("GET", "/v1/me/unread-count", b"", True),
        ("HEAD", "/v1/me/unread-count", b"", False),
        ("GET", "/v1/me/unread-count/", b"", False),
        ("GET", "/v1/me/notifications", b"filter=unread&limit=100", True),
        ("GET", "/v1/me/notifications", b"limit=020", False),
        ("GET", "/v1/me/notifications", b"limit=", False),
        ("GET", "/v1/me/notifications", b"filter=", False),
        ("GET", "/v1/me/notifications", b"cursor=" + b"A" * 8193, False),
        ("GET", "/v1/me/notifications", b"cursor=" + b"A" * 8192, True),
        ("GET", "/v1/me/notifications", b"x=%FF", True),
        ("GET", "/v1/me/notifications", b"\xff", False),
        ("POST", "/v1/me/notifications/01J0/read", b"", True),
        ("POST", "/v1/me/notifications/01J0/unread", b"", True),
        ("POST", "/v1/me/notifications/01J0/archive", b"", True),
        ("POST", "/v1/me/notifications/01J0/delete", b"", False),
        ("POST", "/v1/me/notifications/" + "A" * 27 + "/read", b"", False),
        ("POST", "/v1/me/notifications/read-all", b"", True),
        ("POST", "/v1/me/notifications/seen", b"", False),  # reads a body: the app's
        ("GET", "/v1/me/notifications/read-all", b"", False),
        ("GET", "/v1/me/topics", b"", False),
    ],
)
def test_only_what_the_route_takes_as_written_is_taken(
    method: str, path: str, query: bytes, taken: bool
) -> None:
    assert (route_of(method, path, query) is not None) is taken


def test_the_fast_routes_are_the_routers_own() -> None:
    """Each path the fast path serves is a route of api/inbox.py with that method."""
    served = {(m, r.path) for r in inbox.router.routes for m in r.methods}
    for method, path in [
        ("GET", "/v1/me/unread-count"),
        ("GET", "/v1/me/notifications"),
        ("POST", "/v1/me/notifications/{id}/read"),
        ("POST", "/v1/me/notifications/{id}/unread"),
        ("POST", "/v1/me/notifications/{id}/archive"),
        ("POST", "/v1/me/notifications/read-all"),
        ("POST", "/v1/me/notifications/archive-all"),
        ("POST", "/v1/me/notifications/seen-all"),
    ]:
        assert (method, path) in served


def test_page_params_are_read_as_the_route_reads_them() -> None:
    assert page_params(b"") == {}
    assert page_params(b"filter=archived&limit=7&cursor=Ab-_") == {
        "filter": "archived",
        "limit": 7,
        "cursor": "Ab-_",
    }
    assert page_params(b"q=1&_=2") == {}  # names the route does not read
