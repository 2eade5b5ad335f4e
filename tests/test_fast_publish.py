"""`POST /v1/notifications` answered from Clarion's HTTP protocol (`FastPublish`, api/lean.py)
skips the ASGI app, and answers every request exactly as the app does.

A real uvicorn server with `ClarionHttpProtocol` and the real app (`create_app`, its lifespan,
a SQLite store), behind a pass-through that counts the requests the ASGI app saw
(`harness.inprocess`). The reference answer for each request is the app's: the same request
with a chunked body (which the fast path leaves to the app, whose body limit reads it) or
from a key not verified yet.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from clarion.api.lean import plain
from clarion.config import Settings
from harness.inprocess import Live, publisher_key, serving

Answer = tuple[int, list[tuple[bytes, bytes]], Any]
VARYING = {b"date", b"x-request-id"}  # per response, whichever path answers


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        jwt_secret="x" * 40,
        rate_limit_publish="20/minute",
        max_body=4096,
    )
    async with serving(settings) as live:
        yield live


async def post(
    client: httpx.AsyncClient, auth: str, body: bytes, *, chunked: bool = False, **headers: str
) -> Answer:
    async def chunks() -> AsyncIterator[bytes]:
        yield body

    r = await client.post(
        "/v1/notifications",
        content=chunks() if chunked else body,
        headers={"authorization": auth, "content-type": "application/json", **headers},
    )
    kept = [(n.lower(), v) for n, v in r.headers.raw if n.lower() not in VARYING]
    assert {n.lower() for n, _ in r.headers.raw} >= VARYING
    payload = r.json()
    if isinstance(payload, dict) and "id" in payload:
        payload["id"] = "<id>"
    return r.status_code, kept, payload


GOOD = orjson.dumps({"users": ["ann"], "title": "hi"})


async def test_a_warm_keys_publish_skips_the_app_and_answers_as_the_app(
    live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    auth = await publisher_key(live)
    caplog.set_level(logging.INFO, logger="clarion.access")
    async with httpx.AsyncClient(base_url=live.url) as client:
        cold = await post(client, auth, GOOD)  # verifies (and warms) the key: the app's answer
        assert live.app.http == 1
        fast = await post(client, auth, GOOD)
        assert live.app.http == 1, "a warm key's valid publish reached the ASGI app"
        reference = await post(client, auth, GOOD, chunked=True)
        assert live.app.http == 2
    assert fast[0] == 201 and fast[2]["streams"] == ["user:ann"]
    assert fast == cold == reference
    lines = [r for r in caplog.records if getattr(r, "fields", {}).get("event") == "request"]
    assert [(r.fields["status"], r.fields["who"]) for r in lines] == [  # type: ignore[attr-defined]
        (201, lines[0].fields["who"])  # type: ignore[attr-defined]
    ] * 3
    assert lines[0].fields["who"].startswith("key:")  # type: ignore[attr-defined]


async def test_refusals_are_the_apps_own(live: Live) -> None:
    """422 and 400 (bodies the model refuses), 401, 413: answered exactly as the app answers
    them (the reference: a chunked body, which only the app takes). No 403 here: any key may
    publish (both scopes)."""
    auth = await publisher_key(live)
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await post(client, auth, GOOD))[0] == 201  # warms the key
        for body, status in (
            (orjson.dumps({"users": ["ann"]}), 422),
            (orjson.dumps({"users": ["ann"], "title": "x", "priority": "loud"}), 422),
            (b"{not json", 400),
        ):
            fast = await post(client, auth, body)
            assert fast[0] == status
            assert fast == await post(client, auth, body, chunked=True)
        too_large = orjson.dumps({"users": ["ann"], "title": "x" * 5000})
        assert (await post(client, auth, too_large))[0] == 413
        assert await post(client, auth, too_large) == await post(
            client, auth, too_large, chunked=True
        )
        unknown = "Bearer clk_0000000000000000_" + "A" * 43
        assert (await post(client, unknown, GOOD))[0] == 401
        assert await post(client, unknown, GOOD) == await post(client, unknown, GOOD, chunked=True)


async def test_a_key_over_its_limit_gets_the_apps_429_with_retry_after(live: Live) -> None:
    auth = await publisher_key(live)
    async with httpx.AsyncClient(base_url=live.url) as client:
        assert (await post(client, auth, GOOD))[0] == 201  # warms the key
        seen = live.app.http
        for _ in range(19):  # the rest of the key's 20 a minute, answered fast
            assert (await post(client, auth, GOOD))[0] == 201
        fast = await post(client, auth, GOOD)
        assert live.app.http == seen
        reference = await post(client, auth, GOOD, chunked=True)
        waits = [int(dict(a[1])[b"retry-after"]) for a in (fast, reference)]
        assert fast[0] == 429 and 0 <= waits[0] - waits[1] <= 1  # seconds to the window's end
        assert _waitless(fast) == _waitless(reference)


def _waitless(answer: Answer) -> Answer:
    status, headers, body = answer
    return status, [(n, b"<s>" if n == b"retry-after" else v) for n, v in headers], body


WARM = [(b"authorization", b"Bearer k"), (b"content-length", b"10")]


@pytest.mark.parametrize(
    ("headers", "taken"),
    [
        (WARM, True),
        ([(b"authorization", b"bearer k"), (b"content-length", b"10")], True),
        ([*WARM, (b"content-type", b"application/json; charset=utf-8")], True),
        ([*WARM, (b"content-type", b"text/plain")], False),
        ([(b"authorization", b"Basic k"), (b"content-length", b"10")], False),
        ([(b"authorization", b"Bearer k")], False),  # chunked: the body limit reads it
        ([(b"authorization", b"Bearer k"), (b"content-length", b"99999")], False),  # 413
        ([*WARM, (b"origin", b"https://a.example")], False),  # CORS
        ([*WARM, (b"x-forwarded-for", b"10.0.0.1")], False),  # the proxy's client address
        ([*WARM, (b"authorization", b"Bearer j")], False),
    ],
)
def test_only_requests_the_middleware_leaves_unchanged_are_taken(
    headers: list[tuple[bytes, bytes]], taken: bool
) -> None:
    assert (plain(headers, 4096) is not None) is taken
