"""Python SDK: publish from a backend, or follow a user's live events from a worker or a test.

    async with Publisher("http://127.0.0.1:8000", api_key) as clarion:
        await clarion.publish(users=["alice"], title="Build green", priority="low")

    async for event in subscribe("http://127.0.0.1:8000", token=get_token):
        print(event["type"], event.get("notification", {}).get("title"))

    token = mint_token("alice", roles=["admin"], ttl=600)  # your backend, for the browser

`subscribe` reconnects with backoff and resumes from its cursor, so a restart of the server or a
dropped network loses nothing and repeats nothing (see docs/protocol.md). A refusal that retrying
cannot cure (a token refused twice, a forbidden origin, a malformed frame) raises `ClarionError`.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import orjson
import websockets
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
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


def publish_sync(
    server: str, api_key: str, /, *, timeout: float = 10.0, **body: Any
) -> dict[str, Any]:
    """`POST /v1/notifications` from synchronous code (a Django view or signal, a Flask route):
    returns the answer once the notification is stored, raises `ClarionError` otherwise.
    (`server` and `api_key` are positional: the body has a `url` of its own.)"""
    response = httpx.post(
        server.rstrip("/") + "/v1/notifications",
        json=body,
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=timeout,
    )
    if response.status_code >= 400:
        raise _error(response)
    result: dict[str, Any] = response.json()
    return result


def mint_token(
    user: str,
    *,
    roles: Sequence[str] = (),
    topics: Sequence[str] = (),
    ttl: int = 600,
    secret: str | None = None,
    private_key: str | bytes | None = None,
    algorithm: str | None = None,
    audience: str | None = None,
    issuer: str | None = None,
    key_id: str | None = None,
) -> str:
    """A user JWT for the browser, signed the way the server verifies it (`sub`, `exp`, `iat`,
    optional `roles`, `topics`, `aud`, `iss`).

    Sign with the server's shared HS256 `secret` (default: `CLARION_JWT_SECRET`), or with an
    RSA or EC `private_key` (PEM) whose public half the server holds (`CLARION_JWT_PUBLIC_KEY`
    or its JWKS): RS256 or ES256 unless `algorithm` says otherwise. Keep `ttl` short (minutes):
    the browser client asks for a fresh token before this one runs out.
    """
    if not isinstance(user, str) or not user.strip():
        raise ValueError("mint_token(): user must be a non-empty string")
    if ttl <= 0:
        raise ValueError("mint_token(): ttl must be positive seconds")
    now = int(time.time())
    claims: dict[str, Any] = {"sub": user, "iat": now, "exp": now + int(ttl)}
    if roles:
        claims["roles"] = list(roles)
    if topics:
        claims["topics"] = list(topics)
    if audience:
        claims["aud"] = audience
    if issuer:
        claims["iss"] = issuer
    headers = {"kid": key_id} if key_id else None
    if private_key is not None:
        key = serialization.load_pem_private_key(
            private_key.encode() if isinstance(private_key, str) else private_key, password=None
        )
        if isinstance(key, rsa.RSAPrivateKey):
            default = "RS256"
        elif isinstance(key, ec.EllipticCurvePrivateKey):
            default = {256: "ES256", 384: "ES384", 521: "ES512"}[key.curve.key_size]
        else:
            raise ValueError("mint_token(): private_key must be an RSA or EC key")
        return jwt.encode(claims, key, algorithm=algorithm or default, headers=headers)
    secret = secret or os.environ.get("CLARION_JWT_SECRET")
    if not secret:
        raise ValueError("mint_token(): pass secret= or private_key=, or set CLARION_JWT_SECRET")
    return jwt.encode(claims, secret, algorithm=algorithm or "HS256", headers=headers)


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
