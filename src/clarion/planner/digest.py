"""Digest summaries: one notification standing for the items held for a user and type."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from clarion.domain import Draft, iso
from clarion.events import notification_doc

DIGEST_LIST = 20  # items listed in a digest's `data`


def summaries(
    taken: Sequence[tuple[str, str, str]], docs: dict[str, dict[str, Any]]
) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """Group held items (user, type, notification id) into (user, type, docs), oldest first;
    items whose notification is gone (retention) are left out."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for user, type, nid in sorted(taken, key=lambda r: r[2]):
        if nid in docs:
            groups.setdefault((user, type), []).append(docs[nid])
    return [(user, type, items) for (user, type), items in groups.items()]


def digest_draft(
    id: str, user: str, type: str, items: Sequence[dict[str, Any]], now: datetime
) -> Draft:
    """One summary notification standing for `items` (oldest first)."""
    first, n = items[0], len(items)
    title = first["title"] if n == 1 else f"{first['title']} and {n - 1} more"
    doc = notification_doc(
        id,
        iso(now),
        type=type,
        priority="low",
        title=title[:300],
        body="\n".join(str(i["title"]) for i in items[:DIGEST_LIST])[:5000],
        actor=first.get("actor"),
        url=first.get("url") if n == 1 else None,
        data={
            "digest": {
                "count": n,
                "items": [
                    {"id": i["id"], "title": i["title"], "created_at": i["created_at"]}
                    for i in items[:DIGEST_LIST]
                ],
            }
        },
    )
    return Draft(
        id=id, type=type, priority="low", doc=doc, created_at=now, users=[user], digest=False
    )
