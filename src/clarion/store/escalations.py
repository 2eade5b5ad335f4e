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

`online` is how `when: offline` knows, across nodes, whether a user had a live connection
at publish time: each node writes a user's interval when its first connection there opens
and its last closes (store/presence.py), and an open interval lasts while its node's beat
(`node_beats`) is fresh. The recipients' intervals are read in one query per batch, only
for rows with `when: offline`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, func, literal, or_, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion import inbox as inbox_rules
from clarion.domain import TypeSettings, UserPreferences
from clarion.inbox import Mark, View
from clarion.planner.escalate import Candidate, EmailRow, EscalationRow, recipients
from clarion.store.batches import in_lists
from clarion.store.db import Database, aware
from clarion.store.outbox import any_due
from clarion.store.presence import PresenceStore
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
from clarion.store.schema_control import cancellation_keys, node_beats
from clarion.store.settings import TypeCache
from clarion.streams import USER_PREFIX


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
    p, w, m, pr, us = profiles, watermarks, marks, preferences, user_settings
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
        .add_columns(us.c.timezone, us.c.quiet_start, us.c.quiet_end)
        .select_from(
            c.join(p, p.c.user_id == c.c.user_id)
            .outerjoin(w, and_(w.c.user_id == c.c.user_id, w.c.stream == stream))
            .outerjoin(m, and_(m.c.user_id == c.c.user_id, m.c.notification_id == nid))
            .outerjoin(pr, and_(pr.c.user_id == c.c.user_id, pr.c.type == type))
            .outerjoin(us, us.c.user_id == c.c.user_id)
        )
    )


def _personal_query(ids: list[str]) -> Any:
    """The named recipients (personal routes) of all these notifications who have an address,
    in one query, with the same columns as `_candidates_query` and then the route's
    notification id, stream and seq."""
    p, w, m, pr, us = profiles, watermarks, marks, preferences, user_settings
    r, n = routes, notifications
    owner = func.substr(r.c.stream, len(USER_PREFIX) + 1)
    return (
        select(p.c.user_id, literal(0), p.c.email, p.c.email_status)
        .add_columns(w.c.read_seq, w.c.archived_seq, w.c.seen_seq, w.c.read_at, w.c.archived_at)
        .add_columns(m.c.read_at, m.c.unread, m.c.archived_at, m.c.seen_at, pr.c.email)
        .add_columns(us.c.timezone, us.c.quiet_start, us.c.quiet_end)
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
    zone, quiet_start, quiet_end = row[14:17]
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
    )


async def intervals(
    conn: AsyncConnection, users: Sequence[str]
) -> dict[str, tuple[tuple[datetime, datetime], ...]]:
    """Each user's `online` intervals over every node, an open one ending at its node's last
    beat (a dead node's stops there; one already forgotten is closed): one query per chunk."""
    o, b = online.c, node_beats.c
    out: dict[str, list[tuple[datetime, datetime]]] = {}
    for chunk in in_lists(sorted(users)):
        rows = await conn.execute(
            select(o.user_id, o.since, func.coalesce(o.until, b.alive_at))
            .select_from(online.outerjoin(node_beats, b.node == o.node))
            .where(o.user_id.in_(chunk))
        )
        for user, since, until in rows.all():
            if until is not None:
                out.setdefault(user, []).append((aware(since), aware(until)))
    return {u: tuple(sorted(v)) for u, v in out.items()}


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
    """The sweep and the presence housekeeping."""

    db: Database
    types: TypeCache
    presence: PresenceStore

    async def sweep(self, now: datetime, heartbeat: float, limit: int = 100) -> int:
        """Turn the escalations due at `now` into emails, exactly once; returns how many
        emails were queued. Run once per call (the node's loop calls it again while full)."""
        due_at = escalations.c.due_at
        if not await any_due(self.db, escalations, now):  # the common case: no write lock
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

    async def beat(self, now: datetime) -> int:
        """Housekeeping of presence (store/presence.py `sweep`): rows of nodes long dead and
        `online` intervals no escalation can ask about; O(1) when there are none."""
        return await self.presence.sweep(now)


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
    shared: dict[tuple[str, int], list[Candidate]] = {}
    for row in taken:
        note = notes.get(row["notification_id"])
        for stream, seq in where.get(row["notification_id"], []):
            if note is None or stream.startswith(USER_PREFIX) or (stream, seq) in shared:
                continue
            found = await conn.execute(_candidates_query(stream, seq, note.id, note.type))
            shared[(stream, seq)] = [_candidate(r, stream, seq) for r in found.all()]
    if any(r["offline"] for r in taken):  # presence is read only when a rule asks
        everyone = {c.user for cs in (*personal.values(), *shared.values()) for c in cs}
        spans = await intervals(conn, list(everyone))

        def present(cs: list[Candidate]) -> list[Candidate]:
            return [replace(c, online=spans.get(c.user, ())) for c in cs]

        personal = {k: present(v) for k, v in personal.items()}
        shared = {k: present(v) for k, v in shared.items()}
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
            candidates += shared.get((stream, seq), [])
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
