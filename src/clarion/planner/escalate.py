"""Escalation: which rows a publish writes, and whom a due row reaches. Pure.

A notification (or its type, by default) says `escalate: [{"channel": "email", "after": 900,
"unless": "seen"}]`. A publish writes one row per notification and rule, whatever its
audience (`escalations`); when it comes due, the sweep loads the recipients still entitled
to it (named users, and the followers of its shared streams who have an email address) with
their seen/read state, choices and presence, and `recipients` decides who is emailed and when.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import TypedDict

import orjson

from clarion import preferences as rules
from clarion import templates
from clarion.domain import Draft, Escalation, TypeSettings, UserPreferences

PRESENCE_SLACK = 3  # heartbeats a presence row may lag and still count as connected


class EscalationRow(TypedDict):
    """An `escalations` row: one notification x rule."""

    notification_id: str
    rule: int
    channel: str
    unless: str
    offline: bool
    due_at: datetime
    created_at: datetime


class EmailRow(TypedDict):
    """An `email_outbox` row: one notification x user."""

    notification_id: str
    user_id: str
    due_at: datetime
    attempts: int
    created_at: datetime


def templated(d: Draft, types: Mapping[str, TypeSettings]) -> Draft:
    """The draft with its type's `in_app` template applied (title and body), in the type's
    default locale: a notification is encoded once for all its recipients, so in-app text
    cannot follow each recipient's locale (email does). Unchanged without a template, or if
    the template fails on this notification's data."""
    rule = types.get(d.type)
    if rule is None or "in_app" not in rule.templates:
        return d
    doc = orjson.loads(d.doc)
    try:
        found = templates.render(rule.templates, "in_app", rule.locale, rule.locale, doc)
    except Exception:  # checked when stored; the publisher's own title stands
        return d
    if found is None:
        return d
    _, parts = found
    doc["title"] = parts.get("title", doc["title"])[:300] or doc["title"]
    doc["body"] = parts.get("body", doc.get("body", ""))[:5000]
    return replace(d, doc=orjson.dumps(doc))


def rules_of(d: Draft, types: Mapping[str, TypeSettings]) -> tuple[Escalation, ...]:
    """The draft's own rules, else its type's."""
    if d.escalate is not None:
        return d.escalate
    return types.get(d.type, rules.DEFAULT).escalate


def escalations(drafts: Sequence[Draft], types: Mapping[str, TypeSettings]) -> list[EscalationRow]:
    """The rows a batch of (fresh) drafts writes: due `after` seconds after each publish."""
    return [
        EscalationRow(
            notification_id=d.id,
            rule=i,
            channel=e.channel,
            unless=e.unless,
            offline=e.offline,
            due_at=d.created_at + timedelta(seconds=e.after),
            created_at=d.created_at,
        )
        for d in drafts
        for i, e in enumerate(rules_of(d, types))
    ]


@dataclass(frozen=True, slots=True)
class Candidate:
    """A user a due escalation may reach, with what decides it."""

    user: str
    email: str | None
    bad: bool  # the address was refused for good
    seen: bool  # shown, read or archived
    read: bool  # read or archived
    choice: bool | None  # the user's `email` choice for the type
    prefs: UserPreferences  # time zone and quiet hours
    # presence: (since, until) on each node, connected without a break in between
    online: tuple[tuple[datetime, datetime], ...] = ()


def was_online(c: Candidate, at: datetime, heartbeat: float) -> bool:
    """Whether the user had a live connection at `at` (on any node: the `online` intervals,
    an open one ending at its node's last beat, which may lag by the slack)."""
    slack = timedelta(seconds=PRESENCE_SLACK * heartbeat)
    return any(since <= at and until >= at - slack for since, until in c.online)


def recipients(
    row: EscalationRow,
    type: str,
    priority: str,
    candidates: Sequence[Candidate],
    types: Mapping[str, TypeSettings],
    now: datetime,
    heartbeat: float,
) -> list[EmailRow]:
    """Who a due escalation emails: not seen (or read) yet, email on for the type, a good
    address, and (`offline`) no live connection at publish time. Quiet hours hold the email
    until they end, except `critical`. One row per user however many ways it reached them,
    judged by the user's first candidate row."""
    out: dict[str, EmailRow] = {}
    judged: set[str] = set()  # by its first copy (the store lists personal copies first)
    for c in candidates:
        if c.user in judged:
            continue
        judged.add(c.user)
        if not c.email or c.bad:
            continue
        if c.read or (row["unless"] == "seen" and c.seen):
            continue
        if row["offline"] and was_online(c, row["created_at"], heartbeat):
            continue
        if not rules.email_allowed(type, c.choice, types):
            continue
        until = None if priority == "critical" else rules.quiet_until(c.prefs, now)
        out[c.user] = EmailRow(
            notification_id=row["notification_id"],
            user_id=c.user,
            due_at=until.astimezone(UTC) if until else now,
            attempts=0,
            created_at=now,
        )
    return list(out.values())
