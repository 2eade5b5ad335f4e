"""Builders for the JSON events of docs/protocol.md; the only place their shapes are written."""

from __future__ import annotations

from typing import Any

import orjson

from clarion.domain import CONTROL_KINDS, Meta


def notification_doc(id: str, created_at: str | None, **fields: Any) -> bytes:
    """The notification as clients see it, encoded once and stored as is."""
    return orjson.dumps(
        {
            "id": id,
            "type": fields["type"],
            "priority": fields["priority"],
            "title": fields["title"],
            "body": fields.get("body", ""),
            "icon": fields.get("icon"),
            "actor": fields.get("actor"),
            "url": fields.get("url"),
            "actions": fields.get("actions", []),
            "data": fields.get("data", {}),
            "created_at": created_at,
            "expires_at": fields.get("expires_at"),
            "collapse_key": fields.get("collapse_key"),
        }
    )


def notification_event(
    stream: str,
    seq: int,
    doc: bytes,
    *,
    also: dict[str, int] | None = None,
    replaces: list[str] | None = None,
    collapsed: int = 0,
) -> bytes:
    """A `notification` event embedding the already-encoded notification `doc`.

    `also`: where else the same notification went that takes precedence over this copy (see
    `Session.wants`; sessions read it from the event's `Meta`, not from here).
    `replaces` lists the unread notifications it collapsed."""
    event: dict[str, Any] = {"type": "notification", "stream": stream, "seq": seq}
    if also:
        event["also"] = also
    if replaces:
        event["replaces"] = replaces
        event["collapsed"] = collapsed
    event["notification"] = orjson.Fragment(doc)
    return orjson.dumps(event)


def follow_event(stream: str, seq: int, kind: str, topic: str, at: int) -> bytes:
    """`follow` / `unfollow` on the user's stream: `at` is the topic's seq where it starts/ends."""
    return orjson.dumps({"type": kind, "stream": stream, "seq": seq, "topic": topic, "at": at})


def preferences_event(stream: str, seq: int, muted: list[str]) -> bytes:
    return orjson.dumps({"type": "preferences", "stream": stream, "seq": seq, "muted": muted})


def state_event(
    stream: str, seq: int, change: str, ids: list[str], at: str, unread: int, unseen: int = 0
) -> bytes:
    return orjson.dumps(
        {
            "type": "state",
            "stream": stream,
            "seq": seq,
            "change": change,
            "ids": ids,
            "at": at,
            "unread": unread,
            "unseen": unseen,
        }
    )


def stored_meta(kind: str, payload: bytes) -> Meta:
    """The metadata of a stored event that is not a notification. The store keeps no columns
    for a control event's arguments (topic, seq, muted types), so they are read back from the
    bytes written here; only the store does this, when it replays its own rows."""
    if kind not in CONTROL_KINDS:
        return Meta(kind)
    event = orjson.loads(payload)
    if kind == "preferences":
        return Meta(kind, muted=tuple(event["muted"]))
    return Meta(kind, topic=event["topic"], at=int(event["at"]))


def message(kind: str, **fields: Any) -> bytes:
    """An event outside any stream: welcome, unread, resync, error, pong."""
    return orjson.dumps({"type": kind, **fields})


def removed_event(stream: str, seq: int, id: str, at: str, unread: int | None) -> bytes:
    """A recalled notification leaves the inbox: `state` with change `removed`. On a shared
    stream there is no `unread` (it differs per follower: clients ask for their count)."""
    event: dict[str, Any] = {
        "type": "state",
        "stream": stream,
        "seq": seq,
        "change": "removed",
        "ids": [id],
        "at": at,
    }
    if unread is not None:
        event["unread"] = unread
    return orjson.dumps(event)


_ID_AT = b'"notification":{"id":"'


def notification_id_of(payload: bytes) -> str | None:
    """The notification id inside a `notification` event's bytes, as `notification_event`
    and `notification_doc` lay them out (the doc last, its id first; nothing before it can
    hold the marker), for the delivery log's background batch, which must not query the
    store per event. Falls back to parsing."""
    at = payload.find(_ID_AT)  # the first: `data` inside the doc comes after it
    if at >= 0:
        start = at + len(_ID_AT)
        end = payload.find(b'"', start)
        if 0 < end - start <= 26:
            return payload[start:end].decode()
    notification = orjson.loads(payload).get("notification") or {}
    found = notification.get("id")
    return str(found) if found else None
