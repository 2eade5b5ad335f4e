"""Streams and cursors: the naming and position rules every transport shares (no I/O here).

A stream is an ordered log of events numbered 1, 2, 3... A connection's position is the map of
stream to last seq seen; a cursor is that map as unpadded base64url JSON. See docs/protocol.md.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from fnmatch import fnmatchcase

import orjson

ALL = "all"
USER_PREFIX = "user:"
TOPIC_PREFIX = "topic:"
ROLE_PREFIX = "role:"
MAX_CURSOR_LEN = 8192
MAX_CURSOR_STREAMS = 256
MAX_STREAM_NAME = 256  # `user:` and a 200-character user id, with room
CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in a stream name (and PostgreSQL has no NUL)


def user_stream(user_id: str) -> str:
    return USER_PREFIX + user_id


def topic_stream(topic: str) -> str:
    return TOPIC_PREFIX + topic


def role_stream(role: str) -> str:
    return ROLE_PREFIX + role


def matches(topic: str, patterns: Iterable[str]) -> bool:
    """Whether a token's `topics` claim (names or shell-style patterns: `project:*`) covers
    the topic."""
    return any(fnmatchcase(topic, p) for p in patterns)


def topic_of(stream: str) -> str | None:
    return stream[len(TOPIC_PREFIX) :] if stream.startswith(TOPIC_PREFIX) else None


def encode_token(value: object) -> str:
    """JSON as unpadded base64url, keys sorted: the form of every opaque cursor of the API."""
    raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_token(token: str, max_len: int = MAX_CURSOR_LEN) -> object:
    """The JSON inside a token of `encode_token`; raises ValueError for the client."""
    if len(token) > max_len:
        raise ValueError("cursor too long")
    try:
        raw = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
        return orjson.loads(raw)
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        raise ValueError("cursor is not valid") from None


def checked_position(value: object) -> dict[str, int]:
    """A stream -> seq map from a client, checked; raises ValueError for the client."""
    if not isinstance(value, dict) or len(value) > MAX_CURSOR_STREAMS:
        raise ValueError("cursor is not valid")
    position: dict[str, int] = {}
    for stream, seq in value.items():
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 1 << 63:
            raise ValueError("cursor is not valid")
        if len(stream) > MAX_STREAM_NAME or CONTROL.search(stream):
            raise ValueError("cursor is not valid")
        position[stream] = seq
    return position


def encode_cursor(position: Mapping[str, int]) -> str:
    """The cursor for a position; stable key order so equal positions give equal cursors."""
    return encode_token(dict(position))


# An SSE stream's `id:` is its whole cursor after each event, but per event only one stream
# moved. So the cursor is sent in two parts that concatenate into one valid cursor: a head per
# connection, the JSON of every other stream left open (`{"user:ann":12,`) and padded with
# spaces to whole base64 groups, and a tail per event (`"all":57}`), the same bytes for every
# connection. base64 of bytes cut at a multiple of 3 is the concatenation of the parts'
# base64, and JSON allows the spaces: `decode_cursor` (of any Clarion version, and any client
# that decodes a cursor as base64url JSON) reads head + tail as it reads `encode_cursor`.


def cursor_head(position: Mapping[str, int], moved: str) -> bytes:
    """The base64url of `position` without `moved`, open for `cursor_tail(moved, ...)`."""
    rest = orjson.dumps({s: q for s, q in position.items() if s != moved})
    raw = b"{" if len(rest) == 2 else rest[:-1] + b","
    return base64.urlsafe_b64encode(raw + b" " * (-len(raw) % 3))


def cursor_tail(stream: str, seq: int) -> bytes:
    """The end of a cursor whose head is `cursor_head(position, stream)`: `"stream":seq}`."""
    raw = orjson.dumps({stream: seq})[1:]
    return base64.urlsafe_b64encode(raw).rstrip(b"=")


def decode_cursor(cursor: str | None) -> dict[str, int]:
    """Parse a client's cursor; raises ValueError with a message fit for the client."""
    return checked_position(decode_token(cursor)) if cursor else {}
