"""The delivery log in the store: what happened to a notification, per recipient and channel.

Most states are not written as log rows, they are read from the facts the store keeps anyway:
`accepted` from the notification's routes to personal streams, `seen`/`read`/`archived` from
the inbox (marks and watermarks, by the inbox rules), `scheduled` from the scheduled row. Rows
are written only for what leaves no other trace: `skipped` and `held` (in the publish
transaction, and only for publishes that skipped or held someone), `delivered` (batched by
each node in the background, never on the fan-out path), `cancelled`, `recalled`.

A notification to a topic, a role or `all` has no per-follower rows: its `delivered` is one
row per node batch (state `delivered#`) holding the distinct users that node reached as 8-byte
hashes (`reached`), so 100,000 followers cost one row of 800 kB, not 100,000 rows; the count
is the size of the union of those rows' hashes, read when the log is asked for, so a user with
tabs on two nodes counts once. Its per-user rows are those of the users who acted on it one by
one (their marks). So its log costs what its actors cost, not what its followers would.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import inbox as rules
from clarion.deliveries import Row, log_page
from clarion.domain import Draft, iso
from clarion.planner import Plan
from clarion.store.db import Database, aware
from clarion.store.inbox import ROUTE, load_facts, to_route
from clarion.store.schema import marks, notifications, routes
from clarion.store.schema_control import cancellation_keys, deliveries, scheduled
from clarion.store.settings import TypeCache
from clarion.streams import USER_PREFIX


async def record(
    db: Database, conn: AsyncConnection, rows: Iterable[Row], add: bool = False
) -> None:
    """Log states; a state already logged keeps its first time (or, with `add`, gets the
    new count `n` added: the per-stream `delivered` counts)."""
    values = [
        {
            "notification_id": i,
            "user_id": u,
            "channel": c,
            "state": s,
            "at": at,
            "detail": d,
            "n": 1,
        }
        for i, u, c, s, at, d in rows
    ]
    if not values:
        return
    await _upsert(db, conn, values, add)


BATCH = "delivered*"  # a batch's `delivered` row: one per notification, its users in `users`


async def add_delivered(
    conn: AsyncConnection,
    batch: str,
    delivered: Mapping[str, Mapping[str, tuple[datetime, str]]],
    now: datetime,
) -> None:
    """`delivered` to named users, one row per notification for this batch: {notification
    id: {user: (when, transports)}}. A row per delivery would double the rows a publish to
    many users writes; this keeps the log's writes to one row per notification a second."""
    if not delivered:
        return
    rows = [
        {
            "notification_id": nid,
            "user_id": batch,
            "channel": "in_app",
            "state": BATCH,
            "at": now,
            "detail": None,
            "n": len(users),
            "users": orjson.dumps({u: [iso(at), via] for u, (at, via) in users.items()}),
        }
        for nid, users in sorted(delivered.items())
    ]
    await conn.execute(insert(deliveries), rows)


def _batches(found: Iterable[tuple[str, bytes]]) -> dict[str, dict[str, tuple[str, str]]]:
    """Batch rows (notification id, users JSON) as {id: {user: (first time, transports)}}."""
    out: dict[str, dict[str, tuple[str, str]]] = {}
    for nid, blob in found:
        users = out.setdefault(nid, {})
        for user, (at, via) in orjson.loads(blob).items():
            if user not in users or at < users[user][0]:
                users[user] = (at, via)
    return out


async def delivered_to(
    conn: AsyncConnection, ids: Sequence[str], user: str | None = None
) -> dict[str, dict[str, tuple[str, str]]]:
    """Who of the named users each notification was delivered to: {id: {user: (at, via)}}."""
    d = deliveries.c
    rows = await conn.execute(
        select(d.notification_id, d.users).where(d.notification_id.in_(list(ids)), d.state == BATCH)
    )
    found = _batches((n, bytes(b)) for n, b in rows.all())
    if user is not None:
        return {n: {user: u[user]} for n, u in found.items() if user in u}
    return found


SHARED = "delivered#"  # a node batch's users reached through shared streams, as hashes
HASH = 8  # bytes per user: a collision among 100,000 users has odds of about 3 in 10^10
LOGGED_ONLY = (BATCH, SHARED)  # rows of no single user (left out of per-user reads)


def user_hash(user: str) -> bytes:
    return hashlib.blake2b(user.encode(), digest_size=HASH).digest()


def hashes(users: Iterable[str]) -> bytes:
    """Distinct users as sorted 8-byte hashes (one `delivered#` row's `users`)."""
    return b"".join(sorted({user_hash(u) for u in users}))


def split(blob: bytes) -> set[bytes]:
    return {blob[i : i + HASH] for i in range(0, len(blob), HASH)}


def reached_rows(
    batch: str, reached: Mapping[str, set[str]], now: datetime
) -> list[dict[str, Any]]:
    """The `delivered#` rows of one node batch: {notification id: the distinct users its live
    connections were written to}. About 1 µs a user (the hashing): run off the event loop."""
    return [
        {
            "notification_id": nid,
            "user_id": batch,
            "channel": "in_app",
            "state": SHARED,
            "at": now,
            "detail": None,
            "n": len(users),
            "users": hashes(users),
        }
        for nid, users in sorted(reached.items())
        if users
    ]


async def add_reached(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Write a batch's `reached_rows`."""
    if rows:
        await conn.execute(insert(deliveries), rows)


async def _upsert(
    db: Database, conn: AsyncConnection, values: list[dict[str, Any]], add: bool
) -> None:
    keys = ["notification_id", "user_id", "channel", "state"]
    merged: dict[tuple[Any, ...], dict[str, Any]] = {}
    for v in values:  # one statement may not touch a row twice (PostgreSQL)
        k = tuple(v[c] for c in keys)
        if k in merged:
            merged[k]["n"] += v["n"]
        else:
            merged[k] = dict(v)
    stmt = db.insert(deliveries)
    if add:
        stmt = stmt.on_conflict_do_update(
            index_elements=keys, set_={"n": deliveries.c.n + stmt.excluded.n}
        )
    else:
        stmt = stmt.on_conflict_do_nothing(index_elements=keys)
    await conn.execute(stmt, [merged[k] for k in sorted(merged)])  # executemany: any size


async def note_publish(
    db: Database,
    conn: AsyncConnection,
    drafts: Sequence[Draft],
    made: Plan,
    now: datetime,
) -> None:
    """In the publish transaction: the cancellation keys, and who was skipped or held. Costs
    nothing for a publish that has no key and skipped or held nobody (the common case)."""
    keys = [
        {"key": d.cancellation_key, "notification_id": d.id}
        for d, r in zip(drafts, made.results, strict=True)
        if d.cancellation_key and not r.duplicate
    ]
    if keys:
        await conn.execute(db.insert(cancellation_keys).values(keys).on_conflict_do_nothing())
    odd = [(d, r) for d, r in zip(drafts, made.results, strict=True) if r.held or r.skipped]
    if not odd:
        return
    held_by = {(i["notification_id"], i["user_id"]) for i in made.held}
    got = {
        (r["notification_id"], r["stream"][len(USER_PREFIX) :])
        for r in made.routes
        if r["stream"].startswith(USER_PREFIX)
    }
    rows: list[Row] = []
    for d, _ in odd:
        for user in dict.fromkeys(d.users):
            if (d.id, user) in held_by:
                rows.append((d.id, user, "in_app", "held", now, "throttle or digest"))
            elif (d.id, user) not in got:
                rows.append((d.id, user, "in_app", "skipped", now, "preference: in-app off"))
    await record(db, conn, rows)


async def logged(
    conn: AsyncConnection, id: str, after: str, limit: int
) -> tuple[list[Row], dict[str, int]]:
    """Per-user rows of one notification (users after `after`, at most `limit` users' rows)
    and the per-state counts of its shared streams."""
    d = deliveries.c
    users = list(
        (
            await conn.execute(
                select(d.user_id)
                .distinct()
                .where(
                    d.notification_id == id,
                    d.user_id > after,
                    d.user_id != "*",
                    d.state.not_in(LOGGED_ONLY),
                )
                .order_by(d.user_id)
                .limit(limit)
            )
        ).scalars()
    )
    rows: list[Row] = []
    if users:
        rows = [
            (i, u, c, s, at, det)
            for i, u, c, s, at, det in (
                await conn.execute(
                    select(d.notification_id, d.user_id, d.channel, d.state, d.at, d.detail).where(
                        d.notification_id == id,
                        d.user_id.in_(users),
                        d.state.not_in(LOGGED_ONLY),
                    )
                )
            ).all()
        ]
    counts: dict[str, int] = {}
    for state, n in (
        await conn.execute(
            select(d.state, func.count())
            .where(d.notification_id == id, d.user_id != "*", d.state.not_in(LOGGED_ONLY))
            .group_by(d.state)
        )
    ).all():
        counts[state] = int(n)
    for state, n in (
        await conn.execute(
            select(d.state, func.sum(d.n))
            .where(d.notification_id == id, d.user_id == "*")
            .group_by(d.state)
        )
    ).all():
        counts[state] = counts.get(state, 0) + int(n)
    batched = (await delivered_to(conn, [id])).get(id, {})
    reached: set[bytes] = set()
    for (blob,) in (
        await conn.execute(select(d.users).where(d.notification_id == id, d.state == SHARED))
    ).all():
        reached |= split(bytes(blob))
    if reached:  # each user once, however many tabs and nodes (named ones included)
        reached |= {user_hash(u) for u in batched}
        counts["delivered"] = counts.get("delivered", 0) + len(reached)
    elif batched:
        counts["delivered"] = counts.get("delivered", 0) + len(batched)
    if batched:
        mine = sorted(u for u in batched if u > after)[:limit]
        rows += [
            (id, u, "in_app", "delivered", datetime.fromisoformat(batched[u][0]), batched[u][1])
            for u in mine
        ]
    return rows, counts


async def routed_users(conn: AsyncConnection, id: str, after: str, limit: int) -> list[str]:
    """Users the notification went to by name (their personal routes), after `after`."""
    r = routes.c
    found = await conn.execute(
        select(r.stream)
        .where(
            r.notification_id == id,
            r.stream > USER_PREFIX + after,
            r.stream.startswith(USER_PREFIX),
        )
        .order_by(r.stream)
        .limit(limit)
    )
    return [s[len(USER_PREFIX) :] for s in found.scalars()]


async def actors(
    conn: AsyncConnection, id: str, after: str, limit: int
) -> list[tuple[str, datetime | None, bool, datetime | None, datetime | None]]:
    """Users who acted on this notification one by one (their marks): (user, read_at,
    marked unread, archived_at, seen_at)."""
    m = marks.c
    return [
        (u, r, bool(un), a, s)
        for u, r, un, a, s in (
            await conn.execute(
                select(m.user_id, m.read_at, m.unread, m.archived_at, m.seen_at)
                .where(m.notification_id == id, m.user_id > after)
                .order_by(m.user_id)
                .limit(limit)
            )
        ).all()
    ]


async def mark_counts(conn: AsyncConnection, id: str) -> dict[str, int]:
    """How many users read, archived and saw it one by one (through the marks' index)."""
    m = marks.c
    row = (
        await conn.execute(
            select(func.count(m.read_at), func.count(m.archived_at), func.count(m.seen_at)).where(
                m.notification_id == id
            )
        )
    ).one()
    return {"read": int(row[0]), "archived": int(row[1]), "seen": int(row[2])}


class DeliveryLog:
    """The delivery log's reads (`GET /v1/notifications/{id}/deliveries`)."""

    db: Database
    types: TypeCache

    async def user_log(self, user: str, ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The logged states of these notifications for one user, by notification id."""
        out: dict[str, list[dict[str, Any]]] = {}
        if not ids:
            return out
        d = deliveries.c
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(d.notification_id, d.channel, d.state, d.at, d.detail).where(
                    d.notification_id.in_(ids), d.user_id == user
                )
            )
            for nid, channel, state, at, detail in rows.all():
                if state not in LOGGED_ONLY:
                    out.setdefault(nid, []).append(
                        {"channel": channel, "state": state, "at": iso(aware(at)), "detail": detail}
                    )
            for nid, users in (await delivered_to(conn, ids, user)).items():
                at, via = users[user]
                out.setdefault(nid, []).append(
                    {"channel": "in_app", "state": "delivered", "at": at, "detail": via}
                )
        return out

    async def delivery_log(
        self, id: str, after: str, limit: int, now: datetime
    ) -> dict[str, Any] | None:
        """One page of a notification's log (users after `after`), with its counts; None when
        there is no such notification (scheduled, released or recalled)."""
        n = notifications.c
        async with self.db.read() as conn:
            head = (await conn.execute(select(n.type, n.created_at).where(n.id == id))).first()
            if head is None:
                row = (
                    await conn.execute(
                        select(scheduled.c.due_at, scheduled.c.body, scheduled.c.created_at).where(
                            scheduled.c.id == id
                        )
                    )
                ).first()
                if row is None:
                    log, counts = await logged(conn, id, after, limit + 1)
                    if not log and not counts:
                        return None
                    return log_page(id, None, None, [], {}, log, counts, {}, [], limit)
                body = orjson.loads(row[1])
                return {
                    "id": id,
                    "type": body.get("type", "default"),
                    "status": "scheduled",
                    "scheduled_for": aware(row[0]),
                    "created_at": aware(row[2]),
                    "streams": [],
                    "counts": {"scheduled": 1},
                    "recipients": [],
                    "next_cursor": None,
                }
            found = [
                to_route(r)
                for r in (
                    await conn.execute(select(*ROUTE).where(routes.c.notification_id == id))
                ).all()
            ]
            streams = sorted({r.stream for r in found})
            named = await routed_users(conn, id, after, limit + 1)
            log, counts = await logged(conn, id, after, limit + 1)
            acted = await actors(conn, id, after, limit + 1)
            users = sorted({*named, *(u for _, u, *_ in log), *(a[0] for a in acted)})[: limit + 1]
            page = users[:limit]
            states: dict[str, tuple[datetime | None, datetime | None, datetime | None]] = {}
            mine = [u for u in page if u in set(named)]
            if mine:  # exact, by the inbox rules (watermarks and marks)
                facts = await self.db.run(
                    conn,
                    lambda c: load_facts(c, [(u, ()) for u in mine], self.types.get_in(c), now),
                )
                for user, f in zip(mine, facts, strict=True):
                    route = rules.primary(f.views, found, now) or next(
                        (r for r in found if r.stream == USER_PREFIX + user), None
                    )
                    mark = next((m for m, _ in f.marked if m.id == id), None)
                    view = f.views.get(route.stream) if route else None
                    if route is not None and view is not None:
                        st = rules.state(view, route.seq, mark)
                        states[user] = (st.read_at, st.archived_at, mark.seen_at if mark else None)
            for user, read_at, unread, archived_at, seen_at in acted:
                if user not in states:
                    states[user] = (None if unread else read_at, archived_at, seen_at)
            counts.update({k: v for k, v in (await mark_counts(conn, id)).items() if v})
            total = await conn.execute(
                select(func.count()).where(
                    routes.c.notification_id == id, routes.c.stream.startswith(USER_PREFIX)
                )
            )
            if accepted := int(total.scalar() or 0):
                counts["accepted"] = accepted  # named recipients (a broadcast has streams)
        out = log_page(
            id,
            head[0],
            aware(head[1]),
            streams,
            states,
            log,
            counts,
            {u: True for u in named},
            page,
            limit,
        )
        out["next_cursor"] = page[-1] if len(users) > limit else None
        return out
