"""Who of a publish's named users gets it now: preferences, throttles and digests.

Pure: the users' choices, the throttle windows and the open digest windows come in as facts,
the decisions and the state to store go out. The store applies them in the publishing
transaction, so a decision and its notification commit together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict

from clarion import preferences as rules
from clarion.domain import Draft
from clarion.planner.facts import Facts


@dataclass(slots=True)
class Route:
    """Where one draft goes among its named users, and what it collapses."""

    users: list[str]  # get it now
    held: int = 0  # wait for a digest
    skipped: int = 0  # opted out
    # per user (None: the shared streams): the unread notifications it replaces, and how many
    # notifications the new one now stands for (itself excluded)
    replaced: dict[str | None, tuple[list[str], int]] = field(default_factory=dict)
    # per user (None: shared): a later publish of this same batch that replaces this one
    replaced_by: dict[str | None, str] = field(default_factory=dict)


class DigestItem(TypedDict):
    """A `digest_items` row: a named user's copy held for a summary."""

    user_id: str
    type: str
    notification_id: str
    due_at: datetime


@dataclass(slots=True)
class Throttle:
    """A throttle window's state after the batch (`new`: no row yet)."""

    user: str
    type: str
    start: datetime
    count: int
    new: bool


@dataclass(slots=True)
class Fatigue:
    routes: list[Route]  # per draft
    throttles: list[Throttle]  # every window the batch counted in
    held: list[DigestItem]


def route(drafts: Sequence[Draft], facts: Facts, now: datetime) -> Fatigue:
    """Per draft: who gets it now, who opted out, whose copy waits for a digest. A throttle
    window opens with the first publish that counts in it; a digest window with its first
    item, and later items join the open window (also across batches)."""
    counts = dict(facts.throttles)
    due = dict(facts.digests)
    held: list[DigestItem] = []
    routes = []
    for d in drafts:
        rule = facts.types.get(d.type, rules.DEFAULT)
        users = list(dict.fromkeys(d.users))
        r = Route([])
        for user in users:
            if not rules.in_app_allowed(d.type, facts.choices.get((user, d.type)), facts.types):
                r.skipped += 1
            elif d.priority == "critical" or not d.digest:
                r.users.append(user)
            elif rule.digest_seconds and d.priority == "low":
                at = due.setdefault((user, d.type), now + timedelta(seconds=rule.digest_seconds))
                held.append(DigestItem(user_id=user, type=d.type, notification_id=d.id, due_at=at))
            elif rule.throttle_count and rule.throttle_seconds:
                window = timedelta(seconds=rule.throttle_seconds)
                start, count = counts.get((user, d.type), (now, 0))
                if start + window <= now:
                    start, count = now, 0
                counts[(user, d.type)] = (start, count + 1)
                if count + 1 > rule.throttle_count:
                    at = due.setdefault((user, d.type), start + window)
                    held.append(
                        DigestItem(user_id=user, type=d.type, notification_id=d.id, due_at=at)
                    )
                else:
                    r.users.append(user)
            else:
                r.users.append(user)
        r.held = len(users) - len(r.users) - r.skipped
        routes.append(r)
    throttles = [
        Throttle(u, t, start, count, (u, t) not in facts.throttles)
        for (u, t), (start, count) in counts.items()
        if (u, t) not in facts.throttles or facts.throttles[(u, t)] != (start, count)
    ]
    return Fatigue(routes, throttles, held)
