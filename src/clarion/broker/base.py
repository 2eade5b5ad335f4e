"""The broker interface: five methods, one file per backend (chosen by URL in __init__.py).

The broker is not the source of truth (the store is): it only says "stream S has event N" with
the event's bytes and its typed metadata (`domain.Meta`: kind, type, `also`, a control event's
arguments), so nodes can push it to their connections at once without reading the JSON. A node
that lost messages (reconnect, outage) is told through `on_reset` and refills from the store.

Between nodes an event travels as one message (`pack`): the 8-byte seq, a 2-byte header length,
the metadata as a small JSON array, then the event's bytes unchanged. A message that does not
unpack (another version's node during a rolling upgrade) is dropped: the hub refills the gap
from the store.

`redis://` and `nats://` URLs take an optional `namespace` query parameter
(`redis://host:6379/0?namespace=eu1`): clusters, or test runs, that share one Redis or NATS
server then keep their channels (`clarion:eu1:w3:<stream>`) and subjects
(`clarion.eu1.w3.s.<...>`) apart. Without it the names are `clarion:w3:<stream>` and
`clarion.w3.s.<...>`. `w3` names the message format (`WIRE`): nodes of another format, during a
rolling upgrade, do not hear each other's messages, and each refills from the store.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterable
from typing import Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from clarion.domain import Meta, StoredEvent

EventHandler = Callable[[StoredEvent], None]
ResetHandler = Callable[[], None]
HEAD = struct.Struct("!QH")  # seq, length of the metadata that follows
# The message format, in channel and subject names (w1: seq and bytes, no metadata; w2: no
# acceptance time).
WIRE = "w3"


class Broker(Protocol):
    async def connect(self, on_event: EventHandler, on_reset: ResetHandler) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, event: StoredEvent) -> None: ...
    async def subscribe(self, streams: Iterable[str]) -> None: ...
    async def unsubscribe(self, streams: Iterable[str]) -> None: ...


def split_namespace(url: str) -> tuple[str, str]:
    """The URL without its `namespace` query parameter, and the namespace ("" if none)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    names = [v for k, v in query if k == "namespace"]
    if not names:
        return url, ""
    if len(names) > 1 or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", names[0]):
        raise ValueError(f"broker namespace must be one [A-Za-z0-9_-]{{1,64}}: got {names!r}")
    rest = urlencode([(k, v) for k, v in query if k != "namespace"])
    return urlunsplit(parts._replace(query=rest)), names[0]


def pack(event: StoredEvent) -> bytes:
    """An event as one broker message (its stream is the channel or subject)."""
    m = event.meta
    head = orjson.dumps([m.kind, m.type, m.also, m.topic, m.at, m.muted, m.accepted])
    return HEAD.pack(event.seq, len(head)) + head + event.payload


def unpack(stream: str, data: bytes) -> StoredEvent | None:
    """The event in a broker message, or None for one that is not ours."""
    try:
        seq, size = HEAD.unpack_from(data)
        end = HEAD.size + size
        kind, type, also, topic, at, muted, accepted = orjson.loads(data[HEAD.size : end])
        meta = Meta(kind, type, also, topic, at, tuple(muted), float(accepted))
    except (struct.error, ValueError, TypeError):
        return None
    return StoredEvent(stream, seq, data[end:], meta)
