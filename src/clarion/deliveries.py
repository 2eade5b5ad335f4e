"""The delivery log: what the API answers, assembled from the store's facts, and the node's
recorder of `delivered` (written to at least one live connection).

The recorder is off the fan-out path: the hub calls `dispatched` once per notification event
it dispatches, which appends a tuple (a personal stream: the transports of the user's live
sessions; a shared stream: a tuple of the sessions that follow it, so the batch counts each
user once however many tabs it has). A background batch, about once
a second, resolves those (stream, seq) pairs to notification ids in one query and writes the
log rows in one transaction, and hands them to the webhooks as `notification.delivered`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from clarion.domain import iso
from clarion.events import notification_id_of

if TYPE_CHECKING:
    from clarion.hub import Session

ORDER = (
    "scheduled",
    "accepted",
    "skipped",
    "held",
    "delivered",
    "pushed",
    "emailed",
    "failed",
    "seen",
    "read",
    "archived",
    "recalled",
    "cancelled",
)
# (notification id, user or "*" for a shared stream's count, channel, state, at, detail)
Row = tuple[str, str, str, str, datetime, str | None]


def log_page(
    id: str,
    type: str | None,
    created_at: datetime | None,
    streams: Sequence[str],
    states: Mapping[str, tuple[datetime | None, datetime | None, datetime | None]],
    log: Sequence[Row],
    counts: Mapping[str, int],
    named: Mapping[str, bool],
    page: Sequence[str],
    limit: int,
) -> dict[str, Any]:
    """The answer: per recipient and channel, its states in order with their times."""
    per: dict[tuple[str, str], dict[str, tuple[datetime | None, str | None]]] = {}
    wanted = set(page) if page else {u for _, u, *_ in log}
    for user in page:
        if named.get(user):
            per.setdefault((user, "in_app"), {})["accepted"] = (created_at, None)
    for _, user, channel, state, at, detail in log:
        if user in wanted:
            per.setdefault((user, channel), {})[state] = (at, detail)
    for user, (read_at, archived_at, seen_at) in states.items():
        if user not in wanted:
            continue
        box = per.setdefault((user, "in_app"), {})
        for state, when in (("seen", seen_at), ("read", read_at), ("archived", archived_at)):
            if when is not None:
                box[state] = (when, None)
    recipients = []
    for (user, channel), found in sorted(per.items()):
        recipients.append(
            {
                "user": user,
                "channel": channel,
                "states": [
                    {
                        "state": s,
                        "at": iso(found[s][0]),
                        **({"detail": found[s][1]} if found[s][1] else {}),
                    }
                    for s in ORDER
                    if s in found
                ],
            }
        )
    status = (
        "recalled" if "recalled" in counts or any(r[3] == "recalled" for r in log) else "released"
    )
    return {
        "id": id,
        "type": type,
        "status": status if type is not None or status == "recalled" else "cancelled",
        "scheduled_for": None,
        "created_at": created_at,
        "streams": list(streams),
        "counts": {s: counts[s] for s in ORDER if counts.get(s)},
        "recipients": recipients,
        "next_cursor": None,
    }


# A dispatch to a personal stream: (stream, the event's bytes, transports, time.time()).
Personal = tuple[str, bytes, str, float]


class Recorder:
    """Collects what the hub dispatched, for the background batch (`take`): references only
    (the notification id is read from the bytes in the batch; a shared stream's sessions are
    kept as a tuple, and the batch counts their users, each once)."""

    def __init__(self) -> None:
        self.personal: list[Personal] = []
        self.shared: dict[tuple[str, int], tuple[bytes, list[tuple[Session, ...]]]] = {}

    def dispatched(self, stream: str, payload: bytes, via: str, at: float) -> None:
        self.personal.append((stream, payload, via, at))

    def reached(self, stream: str, seq: int, payload: bytes, sessions: tuple[Session, ...]) -> None:
        found = self.shared.get((stream, seq))
        if found is None:
            self.shared[(stream, seq)] = (payload, [sessions])
        else:
            found[1].append(sessions)

    def take(
        self,
    ) -> tuple[list[Personal], dict[tuple[str, int], tuple[bytes, list[tuple[Session, ...]]]]]:
        """What was recorded since the last take (the list is emptied in place: the hot path
        holds a reference to it)."""
        personal, shared = self.personal[:], self.shared
        self.personal.clear()
        self.shared = {}
        return personal, shared


def reached_users(
    shared: Mapping[tuple[str, int], tuple[bytes, list[tuple[Session, ...]]]],
) -> dict[str, set[str]]:
    """Each shared-stream notification's distinct users (off the event loop: a broadcast's
    followers can be many)."""
    reached: dict[str, set[str]] = {}
    for payload, groups in shared.values():
        if nid := notification_id_of(payload):
            users = reached.setdefault(nid, set())
            for sessions in groups:
                users.update(s.user for s in sessions)
    return reached
