"""Escalations in the store: rows due at a time, swept exactly once, expanded lazily.

A publish writes one `escalations` row per notification and rule (planner/escalate.py), in
its transaction. The sweep (`sweep(now)`, run by every node's loop; a run-once entry for
tests) takes due rows and deletes them in the transaction that writes the emails they turn
into, so a crash repeats nothing and loses nothing; on PostgreSQL `FOR UPDATE SKIP LOCKED`
keeps two nodes off the same rows, on SQLite the one writer does. Only then are the
recipients looked at: the named users, and each shared stream's followers who have an email
address, with their seen/read state, choices and presence (`online`). So a broadcast with an
escalation costs one row at publish, and seeing or reading before the due time cancels it for
that user with no write beyond the seen/read mark itself.

`presence` is how `when: offline` knows, across nodes, whether a user had a live connection
at publish time: every node's heartbeat (`beat`) upserts its connected users every few
seconds, keeping `since` while the beats go on without a break.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import inbox as inbox_rules
from clarion.domain import TypeSettings, UserPreferences
from clarion.inbox import Mark, View
from clarion.planner.escalate import Candidate, EmailRow, EscalationRow, recipients
from clarion.store.db import Database, aware
from clarion.store.schedule import PENDING, RECALLERS
from clarion.store.schema import (
    email_outbox,
    escalations,
    follows,
    marks,
    notifications,
    online,
    preferences,
    profiles,
    routes,
    user_settings,
    watermarks,
)
from clarion.store.schema_control import cancellation_keys
from clarion.store.settings import TypeCache
from clarion.streams import USER_PREFIX

BEAT_CHUNK = 1000  # users per online upsert statement


async def cancel_escalations(conn: AsyncConnection, notification_ids: Sequence[str]) -> int:
    """Drop the pending escalations of these notifications (cancelled, recalled, erased)."""
    if not notification_ids:
        return 0
    result = await conn.execute(
        delete(escalations).where(escalations.c.notification_id.in_(list(notification_ids)))
    )
    return int(result.rowcount or 0)


def _candidates_query(stream: str, seq: int, nid: str, type: str) -> Any:
    """The followers a shared route (stream, seq) of notification `nid` reaches who have an
    address, with what `recipients` decides on: one query per route, whatever the number of
    followers (those without an address are never read)."""
    p, w, m, pr, us, ps = profiles, watermarks, marks, preferences, user_settings, online
    f = follows
    who = (
        select(f.c.user_id.label("user_id"), f.c.since_seq.label("lo"))
        .select_from(f.join(p, p.c.user_id == f.c.user_id))
        .where(
            f.c.stream == stream,
            f.c.since_seq < seq,
            or_(f.c.until_seq.is_(None), f.c.until_seq >= seq),
            p.c.email.is_not(None),
        )
    )
    c = who.subquery()
    return (
        select(c.c.user_id, c.c.lo, p.c.email, p.c.email_status)
        .add_columns(w.c.read_seq, w.c.archived_seq, w.c.seen_seq, w.c.read_at, w.c.archived_at)
        .add_columns(m.c.read_at, m.c.unread, m.c.archived_at, m.c.seen_at, pr.c.email)
        .add_columns(us.c.timezone, us.c.quiet_start, us.c.quiet_end, ps.c.since, ps.c.seen_at)
        .select_from(
            c.join(p, p.c.user_id == c.c.user_id)
            .outerjoin(w, and_(w.c.user_id == c.c.user_id, w.c.stream == stream))
            .outerjoin(m, and_(m.c.user_id == c.c.user_id, m.c.notification_id == nid))
            .outerjoin(pr, and_(pr.c.user_id == c.c.user_id, pr.c.type == type))
            .outerjoin(us, us.c.user_id == c.c.user_id)
            .outerjoin(ps, ps.c.user_id == c.c.user_id)
        )
    )


def _personal_query(ids: list[str]) -> Any:
    """The named recipients (personal routes) of all these notifications who have an address,
    in one query, with the same columns as `_candidates_query` and then the route's
    notification id, stream and seq."""
    p, w, m, pr, us, ps = profiles, watermarks, marks, preferences, user_settings, online
    r, n = routes, notifications
    owner = func.substr(r.c.stream, len(USER_PREFIX) + 1)
    return (
        select(p.c.user_id, literal(0), p.c.email, p.c.email_status)
        .add_columns(w.c.read_seq, w.c.archived_seq, w.c.seen_seq, w.c.read_at, w.c.archived_at)
        .add_columns(m.c.read_at, m.c.unread, m.c.archived_at, m.c.seen_at, pr.c.email)
        .add_columns(us.c.timezone, us.c.quiet_start, us.c.quiet_end, ps.c.since, ps.c.seen_at)
        .add_columns(r.c.notification_id, r.c.stream, r.c.seq)
        .select_from(
            r.join(n, n.c.id == r.c.notification_id)
            .join(p, p.c.user_id == owner)
            .outerjoin(w, and_(w.c.user_id == p.c.user_id, w.c.stream == r.c.stream))
            .outerjoin(
                m, and_(m.c.user_id == p.c.user_id, m.c.notification_id == r.c.notification_id)
            )
            .outerjoin(pr, and_(pr.c.user_id == p.c.user_id, pr.c.type == n.c.type))
            .outerjoin(us, us.c.user_id == p.c.user_id)
            .outerjoin(ps, ps.c.user_id == p.c.user_id)
        )
        .where(
            r.c.notification_id.in_(ids),
            r.c.stream.startswith(USER_PREFIX),
            r.c.replaced.is_(False),
            p.c.email.is_not(None),
        )
    )


def _candidate(row: Any, stream: str, seq: int) -> Candidate:
    user, lo, email, status = row[:4]
    read_seq, archived_seq, seen_seq, read_at, archived_at = row[4:9]
    m_read, m_unread, m_archived, m_seen, choice = row[9:14]
    zone, quiet_start, quiet_end, since, seen_at = row[14:19]
    view = View(
        stream,
        lo or 0,
        seq,
        read_seq or 0,
        archived_seq or 0,
        _at(read_at),
        _at(archived_at),
        seen=seen_seq or 0,
    )
    mark = Mark("", _at(m_read), bool(m_unread), _at(m_archived), _at(m_seen))
    return Candidate(
        user,
        email,
        status == "bad",
        inbox_rules.seen(view, seq, mark),
        not inbox_rules.state(view, seq, mark).unread,
        None if choice is None else bool(choice),
        UserPreferences(zone or "UTC", quiet_start, quiet_end),
        _at(since),
        _at(seen_at),
    )


def _row(r: Any) -> EscalationRow:
    return EscalationRow(
        notification_id=r.notification_id,
        rule=r.rule,
        channel=r.channel,
        unless=r.unless,
        offline=bool(r.offline),
        due_at=aware(r.due_at),
        created_at=aware(r.created_at),
    )


def _at(value: datetime | None) -> datetime | None:
    return aware(value) if value is not None else None


class Escalations:
    """The sweep and the online heartbeat."""

    db: Database
    types: TypeCache

    async def sweep(self, now: datetime, heartbeat: float, limit: int = 100) -> int:
        """Turn the escalations due at `now` into emails, exactly once; returns how many
        emails were queued. Run once per call (the node's loop calls it again while full)."""
        due_at = escalations.c.due_at
        async with self.db.read() as conn:  # the common case, nothing due, takes no write lock
            # ORDER BY the index: a plan that cannot flip to a scan (stale statistics after a
            # burst of rows made PostgreSQL scan 100,000 of them for LIMIT 1).
            probe = select(due_at).where(due_at <= now).order_by(due_at).limit(1)
            if (await conn.execute(probe)).first() is None:
                return 0
        async with self.db.write() as conn:
            query = select(escalations).where(due_at <= now).order_by(due_at).limit(limit)
            if not self.db.sqlite:
                query = query.with_for_update(skip_locked=True)
            taken = [_row(r) for r in (await conn.execute(query)).all()]
            if not taken:
                return 0
            key = tuple_(escalations.c.notification_id, escalations.c.rule)
            await conn.execute(
                delete(escalations).where(
                    key.in_([(r["notification_id"], r["rule"]) for r in taken])
                )
            )
            types = await self.types.get(conn)
            rows = await expand(conn, taken, types, now, heartbeat)
            if rows:  # executemany: batched by SQLAlchemy, whatever the number of rows
                await conn.execute(self.db.insert(email_outbox).on_conflict_do_nothing(), rows)
            return len(rows)

    async def beat(self, users: Sequence[str], now: datetime, heartbeat: float) -> None:
        """This node's connected users are online now; a user whose last beat is older than
        the slack (it was away) starts a new `since`."""
        if not users:
            return
        stale = now - timedelta(seconds=3 * heartbeat)
        ordered = sorted(set(users))
        stmt = self.db.insert(online)
        upsert = stmt.on_conflict_do_update(
            index_elements=["user_id"],
            set_={
                "seen_at": stmt.excluded.seen_at,
                "since": case((online.c.seen_at < stale, now), else_=online.c.since),
            },
        )
        async with self.db.write() as conn:
            for i in range(0, len(ordered), BEAT_CHUNK):
                # executemany: one statement whatever the number of rows (batches.py)
                await conn.execute(
                    upsert,
                    [
                        {"user_id": u, "since": now, "seen_at": now}
                        for u in ordered[i : i + BEAT_CHUNK]
                    ],
                )


async def expand(
    conn: AsyncConnection,
    taken: Sequence[EscalationRow],
    types: Mapping[str, TypeSettings],
    now: datetime,
    heartbeat: float,
) -> list[EmailRow]:
    """The email rows due escalations turn into (the decisions are planner/escalate.py's)."""
    ids = sorted({r["notification_id"] for r in taken})
    notes = {
        r.id: r
        for r in (
            await conn.execute(
                select(
                    notifications.c.id,
                    notifications.c.type,
                    notifications.c.priority,
                    notifications.c.expires_at,
                ).where(notifications.c.id.in_(ids))
            )
        ).all()
    }
    where: dict[str, list[tuple[str, int]]] = {}
    for stream, seq, nid in (
        await conn.execute(
            select(routes.c.stream, routes.c.seq, routes.c.notification_id).where(
                routes.c.notification_id.in_(ids), routes.c.replaced.is_(False)
            )
        )
    ).all():
        where.setdefault(nid, []).append((stream, seq))
    # Named recipients of the whole batch in one query; each shared route's followers in one.
    personal: dict[str, list[Candidate]] = {}
    for r in (await conn.execute(_personal_query(ids))).all():
        nid, stream, seq = r[-3:]
        personal.setdefault(nid, []).append(_candidate(r, stream, seq))
    out: list[EmailRow] = []
    for row in taken:
        nid = row["notification_id"]
        note = notes.get(nid)
        if note is None or row["channel"] != "email":
            continue  # gone (retention, erasure) or a channel this version does not know
        if note.expires_at is not None and aware(note.expires_at) <= now:
            continue
        # Personal copies first: a named user is judged by its own copy.
        candidates = list(personal.get(nid, []))
        for stream, seq in where.get(nid, []):
            if not stream.startswith(USER_PREFIX):
                found = await conn.execute(_candidates_query(stream, seq, nid, note.type))
                candidates += [_candidate(r, stream, seq) for r in found.all()]
        out += recipients(row, note.type, note.priority, candidates, types, now, heartbeat)
    return out


async def cancel_by_key(conn: AsyncConnection, key: str, users: list[str]) -> int:
    """Control's cancel (store/schedule.py `PENDING`): the escalations of the notifications
    released with `key` and their emails not sent yet. An escalation is one row per
    notification, so a cancel for some users only drops those users' queued emails."""
    ids = list(
        (
            await conn.execute(
                select(cancellation_keys.c.notification_id).where(cancellation_keys.c.key == key)
            )
        ).scalars()
    )
    if not ids:
        return 0
    mail = delete(email_outbox).where(email_outbox.c.notification_id.in_(ids))
    if users:
        mail = mail.where(email_outbox.c.user_id.in_(users))
    cancelled = int((await conn.execute(mail)).rowcount or 0)
    return cancelled + (0 if users else await cancel_escalations(conn, ids))


async def recall_email(conn: AsyncConnection, notification_id: str) -> None:
    """Control's recall (store/schedule.py `RECALLERS`): nothing of it is emailed any more."""
    await cancel_escalations(conn, [notification_id])
    gone = email_outbox.c.notification_id == notification_id
    await conn.execute(delete(email_outbox).where(gone))


PENDING.append(cancel_by_key)
RECALLERS.append(recall_email)
