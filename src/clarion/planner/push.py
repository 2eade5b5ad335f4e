"""Web Push queueing: which outbox rows a publish writes, and when they come due.

High and critical notifications go to the named recipients who have a subscription and the
`push` channel on for the type; quiet hours put them off until they end, except `critical`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TypedDict

from clarion import preferences as rules
from clarion.domain import Draft, UserPreferences
from clarion.planner.facts import PUSHED, Facts


class PushRow(TypedDict):
    """A `push_outbox` row: one subscription x notification."""

    subscription_id: str
    notification_id: str
    user_id: str
    priority: str
    due_at: datetime
    attempts: int
    created_at: datetime
    expires_at: datetime | None


def pushes(items: Sequence[tuple[Draft, list[str]]], facts: Facts, now: datetime) -> list[PushRow]:
    """Outbox rows for each draft's recipients (those who get it now)."""
    rows: list[PushRow] = []
    for d, users in items:
        if d.priority not in PUSHED:
            continue
        for user in dict.fromkeys(users):
            sub = facts.subscribers.get(user)
            if sub is None:
                continue
            z = sub.prefs
            prefs = UserPreferences(
                z.timezone, z.quiet_start, z.quiet_end, {d.type: (None, sub.push.get(d.type))}
            )
            if not rules.channels(d.type, prefs, facts.types)[1]:
                continue
            until = None if d.priority == "critical" else rules.quiet_until(prefs, now)
            due = until.astimezone(UTC) if until else now
            rows += [
                PushRow(
                    subscription_id=sid,
                    notification_id=d.id,
                    user_id=user,
                    priority=d.priority,
                    due_at=due,
                    attempts=0,
                    created_at=now,
                    expires_at=d.expires_at,
                )
                for sid in sub.subscriptions
            ]
    return rows
