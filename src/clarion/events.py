"""Builders for the JSON events of docs/protocol.md; the only place their shapes are written."""

from __future__ import annotations

from typing import Any

import orjson


def notification_event(stream: str, seq: int, doc: bytes) -> bytes:
    """A `notification` event embedding the already-encoded notification `doc`."""
    return orjson.dumps(
        {"type": "notification", "stream": stream, "seq": seq, "notification": orjson.Fragment(doc)}
    )


def state_event(stream: str, seq: int, change: str, ids: list[str], at: str, unread: int) -> bytes:
    return orjson.dumps(
        {
            "type": "state",
            "stream": stream,
            "seq": seq,
            "change": change,
            "ids": ids,
            "at": at,
            "unread": unread,
        }
    )


def message(kind: str, **fields: Any) -> bytes:
    """An event outside any stream: welcome, unread, resync, error, pong."""
    return orjson.dumps({"type": kind, **fields})
