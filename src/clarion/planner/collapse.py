"""Collapse: a notification with a collapse key replaces the unread ones with the same key.

Per named user it replaces that user's unread personal copies; on shared streams it replaces
the earlier notification for everyone (read or not: per-user state there is not looked at).
Within one batch, a later publish with the same key replaces an earlier one, whose rows are
then written already replaced. Decided in the order of the batch, as if one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from clarion import inbox as inbox_rules
from clarion.domain import Draft
from clarion.planner.facts import Collapsible, Facts, SharedCollapsible
from clarion.planner.fatigue import Route


@dataclass(slots=True)
class Collapse:
    """Stored routes to mark replaced."""

    routes: list[tuple[str, int, str]] = field(default_factory=list)  # personal (stream, seq, type)
    notifications: list[str] = field(default_factory=list)  # every shared route of these


def collapse(drafts: Sequence[Draft], routes: Sequence[Route], facts: Facts) -> Collapse:
    """Fill each route's `replaced` and `replaced_by`; return the stored routes replaced."""
    personal: dict[tuple[str, str], list[Collapsible]] = {}
    for c in sorted(facts.collapsible, key=lambda c: c.seq):
        if inbox_rules.state(c.view, c.seq, c.mark).unread:
            personal.setdefault((c.key, c.user), []).append(c)
    shared: dict[str, list[SharedCollapsible]] = {}
    for s in facts.collapsible_shared:
        shared.setdefault(s.key, []).append(s)
    out = Collapse()
    gone: set[str] = set()  # shared notifications replaced by an earlier draft of the batch
    for d, r in zip(drafts, routes, strict=True):
        key = d.collapse_key
        if not key:
            continue
        for user in r.users:
            found = personal.pop((key, user), [])
            if found:
                out.routes += [(c.stream, c.seq, c.type) for c in found]
                r.replaced[user] = (
                    [c.id for c in found],
                    sum(c.collapsed + 1 for c in found),
                )
        if d.shared:
            most: dict[str, int] = {}
            for s in shared.get(key, ()):
                if s.stream in d.shared and s.id not in gone:
                    most[s.id] = max(most.get(s.id, 0), s.collapsed)
            if most:
                ids = sorted(most)
                gone.update(ids)
                out.notifications += ids
                r.replaced[None] = (ids, sum(most[i] + 1 for i in ids))
    _within(drafts, routes)
    return out


def _within(drafts: Sequence[Draft], routes: Sequence[Route]) -> None:
    """Two publishes with one key in the same batch: the later replaces the earlier."""
    last: dict[tuple[str | None, str], tuple[Draft, Route]] = {}
    for d, r in zip(drafts, routes, strict=True):
        if not d.collapse_key:
            continue
        for user in [*r.users, *([None] if d.shared else [])]:
            key = (user, d.collapse_key)
            if key in last:
                older, older_route = last[key]
                older_route.replaced_by[user] = d.id
                ids, total = r.replaced.get(user, ([], 0))
                _, older_total = older_route.replaced.get(user, ([], 0))
                r.replaced[user] = ([*ids, older.id], total + older_total + 1)
            last[key] = (d, r)
