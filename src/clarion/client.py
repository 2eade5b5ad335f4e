"""Python SDK: publish from a backend, or follow a user's live events from a worker or a test.

    async with Publisher("http://127.0.0.1:8000", api_key) as clarion:
        await clarion.publish(users=["alice"], title="Build green", priority="low")

    async for event in subscribe("http://127.0.0.1:8000", token=get_token):
        print(event["type"], event.get("notification", {}).get("title"))

`subscribe` reconnects with backoff and resumes from its cursor, so a restart of the server or a
dropped network loses nothing and repeats nothing (see docs/protocol.md). A refusal that retrying
cannot cure (a token refused twice, a forbidden origin, a malformed frame) raises `ClarionError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from clarion.streams import decode_cursor, encode_cursor

TokenSource = str | Callable[[], str] | Callable[[], Awaitable[str]]
UNAUTHORIZED = 4001
# What retrying cannot cure: a malformed frame, a forbidden origin or user.
FATAL_CLOSE_CODES = {4000: "bad_request", 4003: "forbidden"}
log = logging.getLogger("clarion.client")


class ClarionError(Exception):
    """An HTTP error answered by the server, with its JSON error fields."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(f"{status} {code}: {message}" + (f" ({field})" if field else ""))
        self.status, self.code, self.message, self.field = status, code, message, field


class Publisher:
    """Publishes notifications with an API key (`clarion keys create`)."""

    def __init__(self, url: str, api_key: str, *, timeout: float = 10.0) -> None:
        self._http = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )

    async def publish(self, **body: Any) -> dict[str, Any]:
        """`POST /v1/notifications` (audience: `users`, `topics`, `roles`, `all`); returns
        `{id, recipients, streams, duplicate, held, skipped}` once stored."""
        return await self._call("POST", "/v1/notifications", body)

    async def publish_many(self, notifications: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`POST /v1/notifications/batch`: one result per item (`status`, `result`, `error`)."""
        answer = await self._call(
            "POST", "/v1/notifications/batch", {"notifications": notifications}
        )
        results: list[dict[str, Any]] = answer["results"]
        return results

    async def subscribe(self, topic: str, users: list[str], *, subscribed: bool = True) -> None:
        """Subscribe users to a topic (they may then follow it again after unfollowing), or
        unsubscribe them and withdraw that permission."""
        path = f"/v1/topics/{topic}/subscribers" + ("" if subscribed else "/remove")
        await self._call("PUT" if subscribed else "POST", path, {"users": users})

    async def put_user(self, user: str, **profile: Any) -> dict[str, Any]:
        """`PUT /v1/users/{id}`: the whole profile (`email`, `name`, `locale`, `timezone`,
        `data`); a field left out is cleared."""
        return await self._call("PUT", f"/v1/users/{quote(user, safe='')}", profile)

    async def get_user(self, user: str) -> dict[str, Any]:
        return await self._call("GET", f"/v1/users/{quote(user, safe='')}", None)

    async def delete_user(self, user: str) -> dict[str, int]:
        """Erase the user (right to erasure); returns the rows removed per table."""
        answer = await self._call("DELETE", f"/v1/users/{quote(user, safe='')}", None)
        erased: dict[str, int] = answer["erased"]
        return erased

    async def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        response = await self._http.request(method, path, json=body)
        if response.status_code >= 400:
            raise _error(response)
        result: dict[str, Any] = response.json()
        return result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _error(response: httpx.Response) -> ClarionError:
    try:
        err = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        err = {"code": "error", "message": response.text[:200]}
    return ClarionError(
        response.status_code, err.get("code", "error"), err.get("message", ""), err.get("field")
    )


async def _token(source: TokenSource) -> str:
    value = source() if callable(source) else source
    if inspect.isawaitable(value):
        value = await value
    return str(value).strip()  # a token read from a file often ends with a newline


async def subscribe(
    url: str,
    token: TokenSource,
    cursor: str | None = None,
    *,
    max_backoff: float = 30.0,
) -> AsyncIterator[dict[str, Any]]:
    """Every event for the token's user, in order, across reconnects (WebSocket).

    Yields `notification`, `state` and `unread` events (not `welcome`). The current cursor is
    in each stream event's `cursor` key: save it, and pass it back as `cursor` after your own
    restart to resume there. A refused token is asked for again once (when `token` is a
    callable); refused again, or refused for good (4000, 4003), raises `ClarionError` with the
    close code as `status` and the server's reason as `message`.
    """
    ws_url = url.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    position = decode_cursor(cursor)
    failures = refusals = 0
    while True:
        try:
            async with websockets.connect(ws_url + "/v1/ws", max_size=None) as ws:
                auth: dict[str, Any] = {"type": "auth", "token": await _token(token)}
                if position:
                    auth["cursor"] = encode_cursor(position)
                await ws.send(orjson.dumps(auth).decode())
                async for raw in ws:
                    event: dict[str, Any] = orjson.loads(raw)
                    if event["type"] == "welcome":
                        position = {**decode_cursor(event["cursor"]), **position}
                        failures = refusals = 0
                        continue
                    if "stream" in event and "seq" in event:
                        if event["seq"] <= position.get(event["stream"], 0):
                            continue  # already seen before a reconnect
                        position[event["stream"]] = event["seq"]
                        event["cursor"] = encode_cursor(position)
                    yield event
        except ConnectionClosed as exc:
            code, reason = (exc.rcvd.code, exc.rcvd.reason) if exc.rcvd else (1006, "")
            if code in FATAL_CLOSE_CODES:
                raise ClarionError(code, FATAL_CLOSE_CODES[code], reason, None) from None
            if code == UNAUTHORIZED:
                refusals += 1
                if refusals > 1 or not callable(token):  # a fresh token was refused too
                    raise ClarionError(code, "unauthorized", reason, None) from None
                log.warning("token refused (%s): asking for a new one", reason)
                continue
            log.info("connection closed (%s %s): reconnecting", code, reason)
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.info("cannot connect to %s (%s): retrying", ws_url, exc)
        failures += 1
        # Exponential backoff with full jitter; a restart or a 4008 reconnects quickly.
        await asyncio.sleep(random.uniform(0, min(max_backoff, 0.25 * 2**failures)))
