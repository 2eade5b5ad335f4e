"""Who of a publish's named users gets it now: preferences, throttles, digests and collapse.

Runs inside the publishing transaction, so the decisions and the notification commit together
(a crash leaves neither). Costs one query per batch when no type has rules: the users'
preferences for the batch's types; throttle, digest and collapse queries run only for the
drafts that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import inbox as inbox_rules
from clarion import preferences as rules
from clarion.domain import Draft, TypeSettings, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.inbox import Mark, View
from clarion.store import holes
from clarion.store.db import Database, aware
from clarion.store.schema import (
    digest_items,
    marks,
    preferences,
    throttles,
    watermarks,
)
from clarion.store.schema import routes as route_rows
from clarion.streams import USER_PREFIX, user_stream

DIGEST_LIST = 20  # items listed in a digest's `data`


@dataclass(slots=True)
class Route:
    users: list[str]  # get it now
    held: int = 0  # wait for a digest
    skipped: int = 0  # opted out
    # per user (None: the shared streams): the unread notifications it replaces, and how many
    # notifications the new one now stands for (itself excluded)
    replaced: dict[str | None, tuple[list[str], int]] = field(default_factory=dict)
    # per user (None: shared): a later publish of this same batch that replaces this one
    replaced_by: dict[str | None, str] = field(default_factory=dict)


class Router:
    def __init__(
        self, db: Database, conn: AsyncConnection, now: datetime, types: dict[str, TypeSettings]
    ) -> None:
        self.db = db
        self.conn = conn
        self.now = now
        self.types = types
        self._known: set[tuple[str, str]] = set()

    async def route(self, drafts: list[Draft]) -> list[Route]:
        types = self.types
        choice = await self._choices(drafts, types)
        counts = await self._throttle_state(drafts, types)
        held: list[dict[str, Any]] = []
        routes = []
        for d in drafts:
            rule = types.get(d.type, rules.DEFAULT)
            route = Route([])
            for user in d.users:
                if not rules.in_app_allowed(d.type, choice.get((user, d.type)), types):
                    route.skipped += 1
                elif d.priority == "critical" or not d.digest:
                    route.users.append(user)
                elif rule.digest_seconds and d.priority == "low":
                    held.append(self._hold(user, d, rule.digest_seconds))
                elif rule.throttle_count and rule.throttle_seconds:
                    start, count = counts.get((user, d.type), (self.now, 0))
                    if start + timedelta(seconds=rule.throttle_seconds) <= self.now:
                        start, count = self.now, 0
                    counts[(user, d.type)] = (start, count + 1)
                    if count + 1 > rule.throttle_count:
                        window_end = start + timedelta(seconds=rule.throttle_seconds)
                        held.append(self._hold(user, d, None, window_end))
                    else:
                        route.users.append(user)
                else:
                    route.users.append(user)
            route.held = len(d.users) - len(route.users) - route.skipped
            routes.append(route)
        await self._save_throttles(counts)
        await self._save_held(held)
        for d, route in zip(drafts, routes, strict=True):
            if d.collapse_key:
                await self._collapse(d, route)
        self._collapse_within(drafts, routes)
        return routes

    async def _choices(
        self, drafts: list[Draft], types: dict[str, TypeSettings]
    ) -> dict[tuple[str, str], bool | None]:
        """The users' own in-app choices for the batch's types (mandatory ones need none)."""
        wanted = {
            d.type for d in drafts if d.users and not types.get(d.type, rules.DEFAULT).mandatory
        }
        users = sorted({u for d in drafts if d.type in wanted for u in d.users})
        if not users:
            return {}
        rows = await self.conn.execute(
            select(preferences.c.user_id, preferences.c.type, preferences.c.in_app).where(
                preferences.c.type.in_(sorted(wanted)),
                preferences.c.user_id.in_(users),
                preferences.c.in_app.is_not(None),
            )
        )
        return {(u, t): a for u, t, a in rows.all()}

    async def _throttle_state(
        self, drafts: list[Draft], types: dict[str, TypeSettings]
    ) -> dict[tuple[str, str], tuple[datetime, int]]:
        pairs = {
            (u, d.type)
            for d in drafts
            if types.get(d.type, rules.DEFAULT).throttle_count and d.priority != "critical"
            for u in d.users
        }
        if not pairs:
            return {}
        rows = await self.conn.execute(
            select(throttles.c.user_id, throttles.c.type, throttles.c.window_start)
            .add_columns(throttles.c.count)
            .where(tuple_(throttles.c.user_id, throttles.c.type).in_(sorted(pairs)))
            .with_for_update()
        )
        state = {(u, t): (aware(start), count) for u, t, start, count in rows.all()}
        self._known = set(state)
        return state

    async def _save_throttles(self, counts: dict[tuple[str, str], tuple[datetime, int]]) -> None:
        if not counts:
            return
        known = self._known
        new = [
            {"user_id": u, "type": t, "window_start": s, "count": c}
            for (u, t), (s, c) in counts.items()
            if (u, t) not in known
        ]
        if new:
            await self.conn.execute(insert(throttles), new)
        for (u, t), (s, c) in counts.items():
            if (u, t) in known:
                await self.conn.execute(
                    update(throttles)
                    .where(throttles.c.user_id == u, throttles.c.type == t)
                    .values(window_start=s, count=c)
                )

    def _hold(
        self, user: str, d: Draft, seconds: int | None, due: datetime | None = None
    ) -> dict[str, Any]:
        return {
            "user_id": user,
            "type": d.type,
            "notification_id": d.id,
            "due_at": due or self.now + timedelta(seconds=seconds or 0),
        }

    async def _save_held(self, held: list[dict[str, Any]]) -> None:
        """A digest window opens with its first item: later items join the open window."""
        if not held:
            return
        pairs = sorted({(h["user_id"], h["type"]) for h in held})
        rows = await self.conn.execute(
            select(digest_items.c.user_id, digest_items.c.type, func.min(digest_items.c.due_at))
            .where(tuple_(digest_items.c.user_id, digest_items.c.type).in_(pairs))
            .group_by(digest_items.c.user_id, digest_items.c.type)
        )
        due = {(u, t): aware(at) for u, t, at in rows.all()}
        for h in held:
            key = (h["user_id"], h["type"])
            h["due_at"] = due.setdefault(key, h["due_at"])
        await self.conn.execute(insert(digest_items), held)

    async def _collapse(self, d: Draft, route: Route) -> None:
        """The new notification replaces the unread ones with its key: per named user, and on
        the shared streams it goes to (there for everyone)."""
        r = route_rows
        if route.users:
            names = {user_stream(u): u for u in route.users}
            found = (
                await self.conn.execute(
                    select(r.c.stream, r.c.seq, r.c.notification_id, r.c.collapsed, r.c.type).where(
                        r.c.stream.in_(list(names)), r.c.collapse_key == d.collapse_key
                    )
                )
            ).all()
            unread = await self._unread_of(
                [(names[stream], stream, seq, nid) for stream, seq, nid, _, _ in found]
            )
            rows = [row for row in found if (row[0], row[1]) in unread]
            await self._replace([(s, q, t) for s, q, _, _, t in rows])
            for stream, _, nid, collapsed, _ in rows:
                user = names[stream]
                ids, total = route.replaced.get(user, ([], 0))
                route.replaced[user] = ([*ids, nid], total + collapsed + 1)
        if d.shared:
            shared = (
                await self.conn.execute(
                    select(r.c.notification_id, func.max(r.c.collapsed))
                    .where(r.c.stream.in_(d.shared), r.c.collapse_key == d.collapse_key)
                    .group_by(r.c.notification_id)
                )
            ).all()
            if shared:
                victims = await self.conn.execute(
                    select(r.c.stream, r.c.seq, r.c.type).where(
                        r.c.notification_id.in_([nid for nid, _ in shared]),
                        r.c.stream.not_like(USER_PREFIX + "%"),
                        r.c.replaced.is_(False),
                    )
                )
                await self._replace([tuple(v) for v in victims.all()])
                route.replaced[None] = ([n for n, _ in shared], sum(c + 1 for _, c in shared))

    async def _replace(self, found: list[Any]) -> None:
        """Collapsed routes are hidden for good (store/holes.py counts them)."""
        if found:
            where = tuple_(route_rows.c.stream, route_rows.c.seq).in_([(s, q) for s, q, _ in found])
            await self.conn.execute(update(route_rows).where(where).values(replaced=True))
            await holes.hide(self.db, self.conn, found)

    async def _unread_of(self, found: list[tuple[str, str, int, str]]) -> set[tuple[str, int]]:
        """Which of these personal routes (user, stream, seq, notification) are unread for
        their user, by the user's marks and watermarks."""
        if not found:
            return set()
        users = sorted({u for u, _, _, _ in found})
        got = await self.conn.execute(
            select(marks.c.user_id, marks.c.notification_id, marks.c.read_at, marks.c.unread)
            .add_columns(marks.c.archived_at)
            .where(
                tuple_(marks.c.user_id, marks.c.notification_id).in_(
                    [(u, nid) for u, _, _, nid in found]
                )
            )
        )
        by_key = {(u, nid): Mark(nid, ra, bool(un), aa) for u, nid, ra, un, aa in got.all()}
        got = await self.conn.execute(
            select(watermarks.c.user_id, watermarks.c.read_seq, watermarks.c.archived_seq).where(
                watermarks.c.user_id.in_(users),
                watermarks.c.stream == literal(USER_PREFIX) + watermarks.c.user_id,
            )
        )
        lines = {u: (read, archived) for u, read, archived in got.all()}
        out = set()
        for user, stream, seq, nid in found:
            read, archived = lines.get(user, (0, 0))
            view = View(stream, 0, seq, read, archived)
            if inbox_rules.state(view, seq, by_key.get((user, nid))).unread:
                out.add((stream, seq))
        return out

    def _collapse_within(self, drafts: list[Draft], routes: list[Route]) -> None:
        """Two publishes with one key in the same transaction: the later replaces the earlier
        (the earlier's inbox row is written already replaced)."""
        last: dict[tuple[str | None, str], tuple[Draft, Route]] = {}
        for d, route in zip(drafts, routes, strict=True):
            if not d.collapse_key:
                continue
            for user in [*route.users, *([None] if d.shared else [])]:
                key = (user, d.collapse_key)
                if key in last:
                    older, older_route = last[key]
                    older_route.replaced_by[user] = d.id
                    ids, total = route.replaced.get(user, ([], 0))
                    _, older_total = older_route.replaced.get(user, ([], 0))
                    route.replaced[user] = ([*ids, older.id], total + older_total + 1)
                last[key] = (d, route)


def digest_draft(user: str, type: str, items: list[dict[str, Any]], now: datetime) -> Draft:
    """One summary notification standing for `items` (oldest first)."""
    first, n = items[0], len(items)
    title = first["title"] if n == 1 else f"{first['title']} and {n - 1} more"
    id = new_id()
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
