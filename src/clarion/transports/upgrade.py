"""The WebSocket opening handshake (RFC 6455 section 4.2), answered from the HTTP parse.

uvicorn hands an upgrade request to its WebSocket protocol by writing the parsed request out
again and having `websockets` parse it a second time, then runs the ASGI app (a task, the
middleware stack, `accept`) to build the 101: most of a connect storm's CPU after the store's
(docs/benchmarks.md). For `GET /v1/ws` the HTTP protocol instead asks these pure functions
whether the headers it already parsed make a valid handshake and for the bytes of the answer;
the connection's owner (transports/websocket.py) does the rest in the same callback.
"""

from __future__ import annotations

import binascii
from base64 import b64decode
from typing import NamedTuple

import orjson
from websockets.utils import accept_key

Headers = list[tuple[bytes, bytes]]  # lower-cased names, as uvicorn's parser keeps them


class BadUpgrade(NamedTuple):
    """Why a handshake is refused: the HTTP status, the header at fault and what is wrong."""

    status: int
    field: str
    message: str


def tokens(value: bytes) -> list[bytes]:
    """A comma-separated header value (`Connection: keep-alive, Upgrade`), lower-cased."""
    return [t.strip().lower() for t in value.split(b",")]


def check(method: str, headers: Headers) -> str | BadUpgrade:
    """The `Sec-WebSocket-Accept` value for a valid opening handshake, or why it is not one
    (the checks `websockets` makes: method, `Connection`, `Upgrade`, version 13, a key that is
    16 bytes in base64). Subprotocols and extensions are not offered: a client asking for
    them gets a plain connection, as from `websockets` configured without any."""
    if method != "GET":
        return BadUpgrade(405, "method", "a WebSocket handshake is a GET")
    connection: list[bytes] = []
    upgrade: list[bytes] = []
    key = version = None
    for name, value in headers:
        if name == b"connection":
            connection += tokens(value)
        elif name == b"upgrade":
            upgrade += tokens(value)
        elif name == b"sec-websocket-key":
            if key is not None:
                return BadUpgrade(400, "Sec-WebSocket-Key", "more than one key")
            key = value
        elif name == b"sec-websocket-version":
            version = value
    if b"upgrade" not in connection:
        return BadUpgrade(400, "Connection", "must include Upgrade")
    if upgrade != [b"websocket"]:
        return BadUpgrade(400, "Upgrade", "must be websocket")
    if version is None or version.strip() != b"13":
        return BadUpgrade(426, "Sec-WebSocket-Version", "only version 13 is supported")
    if key is None:
        return BadUpgrade(400, "Sec-WebSocket-Key", "missing")
    try:
        raw = b64decode(key.strip(), validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != 16:
        return BadUpgrade(400, "Sec-WebSocket-Key", "must be 16 bytes in base64")
    return accept_key(key.strip().decode("ascii"))


def switching(accept: str, default_headers: Headers) -> bytes:
    """The 101 answer, with the server's default headers (`server`, `date`) as uvicorn sends
    them on every response."""
    extra = b"".join(name + b": " + value + b"\r\n" for name, value in default_headers)
    return (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"upgrade: websocket\r\n"
        b"connection: Upgrade\r\n"
        b"sec-websocket-accept: " + accept.encode("ascii") + b"\r\n" + extra + b"\r\n"
    )


def refusal(bad: BadUpgrade) -> bytes:
    """The answer to a handshake that is not one: a JSON error naming the header at fault
    (426 also says which version to use), and the connection is closed."""
    body = orjson.dumps(
        {"error": {"code": "bad_handshake", "message": bad.message, "field": bad.field}}
    )
    reason = {400: b"Bad Request", 405: b"Method Not Allowed", 426: b"Upgrade Required"}
    version = b"sec-websocket-version: 13\r\n" if bad.status == 426 else b""
    return (
        b"HTTP/1.1 %d %s\r\n" % (bad.status, reason[bad.status])
        + b"content-type: application/json\r\n"
        + version
        + b"content-length: %d\r\n" % len(body)
        + b"connection: close\r\n\r\n"
        + body
    )
