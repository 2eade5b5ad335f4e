"""The facts fatigue decisions read, loaded in the publishing transaction: the users' in-app
choices, throttle windows (locked: concurrent publishes count in turn), open digest windows
and collapse candidates with the user's read state; and the writes those decisions make.

The decisions are the planner's (planner/fatigue.py, planner/collapse.py). A batch whose types
have no rules and whose drafts have no collapse key costs one query here (the choices).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam, func, insert, literal, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.inbox import Mark, View
from clarion.planner import Collapsible, SharedCollapsible, Wants
from clarion.planner.collapse import Collapse
from clarion.planner.facts import Pair
from clarion.planner.fatigue import DigestItem, Throttle
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


async def choices(db: Database, conn: AsyncConnection, wants: Wants) -> dict[Pair, bool]:
    """The users' own in-app choices for the batch's types (mandatory ones need none)."""
    users, types = wants.choices
    if not users:
        return {}
    rows = await db.select_in(conn, CHOICES, {"types": types, "users": users})
    return {(u, t): a for u, t, a in rows}


# Built once: every publish runs it, and building the statement and its cache key per call
# cost more CPU than the indexed lookup (a py-spy profile at 16 publishes in flight).
CHOICES = select(preferences.c.user_id, preferences.c.type, preferences.c.in_app).where(
    preferences.c.type.in_(bindparam("types", expanding=True)),
    preferences.c.user_id.in_(bindparam("users", expanding=True)),
    preferences.c.in_app.is_not(None),
)


async def throttle_windows(conn: AsyncConnection, wants: Wants) -> dict[Pair, tuple[datetime, int]]:
    if not wants.throttles:
        return {}
    rows = await conn.execute(
        select(throttles.c.user_id, throttles.c.type, throttles.c.window_start)
        .add_columns(throttles.c.count)
        .where(tuple_(throttles.c.user_id, throttles.c.type).in_(wants.throttles))
        .with_for_update()
    )
    return {(u, t): (aware(start), count) for u, t, start, count in rows.all()}


async def digest_windows(conn: AsyncConnection, wants: Wants) -> dict[Pair, datetime]:
    """When each open digest window (its first held item) comes due."""
    if not wants.digests:
        return {}
    rows = await conn.execute(
        select(digest_items.c.user_id, digest_items.c.type, func.min(digest_items.c.due_at))
        .where(tuple_(digest_items.c.user_id, digest_items.c.type).in_(wants.digests))
        .group_by(digest_items.c.user_id, digest_items.c.type)
    )
    return {(u, t): aware(at) for u, t, at in rows.all()}


async def collapsible(conn: AsyncConnection, wants: Wants) -> list[Collapsible]:
    """Routes not replaced yet of notifications with the batch's collapse keys (a route keeps
    its key only until it is collapsed), on the named users' streams, each with the user's
    mark and watermarks."""
    r = route_rows
    found: list[tuple[str, str, int, str, str, int]] = []
    for key, users in wants.collapse.items():
        names = {user_stream(u): u for u in users}
        rows = await conn.execute(
            select(r.c.stream, r.c.seq, r.c.notification_id, r.c.type, r.c.collapsed).where(
                r.c.stream.in_(list(names)), r.c.collapse_key == key
            )
        )
        found += [(key, names[s], seq, nid, t, c) for s, seq, nid, t, c in rows.all()]
    if not found:
        return []
    users = sorted({u for _, u, _, _, _, _ in found})
    got = await conn.execute(
        select(marks.c.user_id, marks.c.notification_id, marks.c.read_at, marks.c.unread)
        .add_columns(marks.c.archived_at)
        .where(
            tuple_(marks.c.user_id, marks.c.notification_id).in_(
                sorted({(u, nid) for _, u, _, nid, _, _ in found})
            )
        )
    )
    by_key = {(u, nid): Mark(nid, ra, bool(un), aa) for u, nid, ra, un, aa in got.all()}
    w = watermarks
    got = await conn.execute(
        select(w.c.user_id, w.c.read_seq, w.c.archived_seq, w.c.read_at, w.c.archived_at).where(
            w.c.user_id.in_(users), w.c.stream == literal(USER_PREFIX) + w.c.user_id
        )
    )
    lines = {
        u: View(user_stream(u), 0, 0, r, a, ra and aware(ra), aa and aware(aa))
        for u, r, a, ra, aa in got
    }
    out = []
    for key, user, seq, nid, type, collapsed in found:
        line = lines.get(user) or View(user_stream(user), 0, 0)
        view = View(line.stream, 0, seq, line.read, line.archived, line.read_at, line.archived_at)
        mark = by_key.get((user, nid))
        out.append(Collapsible(key, user, seq, nid, type, collapsed, view, mark))
    return out


async def collapsible_shared(conn: AsyncConnection, wants: Wants) -> list[SharedCollapsible]:
    r = route_rows
    out: list[SharedCollapsible] = []
    for key, streams in wants.collapse_shared.items():
        rows = await conn.execute(
            select(r.c.stream, r.c.notification_id, r.c.collapsed).where(
                r.c.stream.in_(streams), r.c.collapse_key == key
            )
        )
        out += [SharedCollapsible(key, s, nid, c) for s, nid, c in rows.all()]
    return out


async def write(
    db: Database,
    conn: AsyncConnection,
    counted: Sequence[Throttle],
    held: Sequence[DigestItem],
    replaced: Collapse,
) -> None:
    """Store what the planner decided: throttle windows, held items, collapsed routes (hidden
    for good, counted by bucket: store/holes.py)."""
    new = [
        {"user_id": t.user, "type": t.type, "window_start": t.start, "count": t.count}
        for t in counted
        if t.new
    ]
    if new:
        await conn.execute(insert(throttles), new)
    for t in counted:
        if not t.new:
            await conn.execute(
                update(throttles)
                .where(throttles.c.user_id == t.user, throttles.c.type == t.type)
                .values(window_start=t.start, count=t.count)
            )
    if held:
        await conn.execute(insert(digest_items), list(held))
    r = route_rows
    gone = list(replaced.routes)
    if replaced.notifications:
        rows = await conn.execute(
            select(r.c.stream, r.c.seq, r.c.type).where(
                r.c.notification_id.in_(replaced.notifications),
                r.c.stream.not_like(USER_PREFIX + "%"),
                r.c.replaced.is_(False),
            )
        )
        gone += [(s, q, t) for s, q, t in rows.all()]
    if gone:
        where = tuple_(r.c.stream, r.c.seq).in_([(s, q) for s, q, _ in gone])
        await conn.execute(update(r).where(where).values(replaced=True))
        await holes.hide(db, conn, gone)
