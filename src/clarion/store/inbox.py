"""The inbox in the store: a user's notifications (personal, and those of the streams it
follows), the unread count, the snapshot a connection starts from, and state changes."""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    func,
    insert,
    literal,
    or_,
    select,
    union,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import (
    Change,
    Filter,
    NotFound,
    Snapshot,
    StateChanged,
    StoredEvent,
    iso,
    utcnow,
)
from clarion.events import state_event
from clarion.store.db import Database
from clarion.store.schema import events, follows, inbox, notification_streams, notifications
from clarion.store.settings import TypeCache, muted_types
from clarion.store.streams import allocate, heads_in
from clarion.streams import TOPIC_PREFIX, user_stream


def _visible(now: Any) -> Any:
    return or_(notifications.c.expires_at.is_(None), notifications.c.expires_at > now)


# Inbox queries are built once with bind parameters, so each call reuses SQLAlchemy's compiled
# statement: building them per call cost more CPU than running them.
USER = bindparam("user", type_=String)
NOW: Any = bindparam("now", type_=DateTime(timezone=True))
MUTED: Any = bindparam("muted", expanding=True)
STATE = inbox.alias("state")
NS = notification_streams
_PERSONAL_JOIN = inbox.join(notifications, notifications.c.id == inbox.c.notification_id)
# A shared notification is in a user's inbox when it went to a stream the user followed at
# the time: after the follow's start and, once unfollowed, up to its end.
_SHARED_JOIN = (
    NS.join(
        follows,
        and_(
            follows.c.user_id == USER,
            follows.c.stream == NS.c.stream,
            NS.c.seq > follows.c.since_seq,
            or_(follows.c.until_seq.is_(None), NS.c.seq <= follows.c.until_seq),
        ),
    )
    .join(notifications, notifications.c.id == NS.c.notification_id)
    .outerjoin(STATE, and_(STATE.c.user_id == USER, STATE.c.notification_id == notifications.c.id))
)


@cache
def _base(kind: str, muted: bool = False) -> Any:
    """A user's personal notifications, or those of the shared streams it follows (each once,
    even when it went to several of them). `muted`: leave out the types in `:muted`."""
    if kind == "personal":
        cols = inbox.c
        query = (
            select(notifications.c.id, notifications.c.doc, cols.read_at, cols.archived_at)
            .add_columns(cols.seen_at, cols.collapsed)
            .select_from(_PERSONAL_JOIN)
            .where(inbox.c.user_id == USER, inbox.c.personal.is_(True), cols.replaced_by.is_(None))
        )
    else:
        cols = STATE.c
        query = (
            select(notifications.c.id, notifications.c.doc, cols.read_at, cols.archived_at)
            .add_columns(cols.seen_at, notifications.c.collapsed)
            .select_from(_SHARED_JOIN)
            .where(notifications.c.replaced_by.is_(None), cols.replaced_by.is_(None))
            .distinct()
        )
        if muted:
            query = query.where(notifications.c.type.not_in(MUTED))
    return query.where(_visible(NOW))


def _cols(kind: str) -> Any:
    return inbox.c if kind == "personal" else STATE.c


@cache
def _filtered(kind: str, filter: Filter, muted: bool = False) -> Any:
    cols, query = _cols(kind), _base(kind, muted)
    if filter == "archived":
        return query.where(cols.archived_at.is_not(None))
    query = query.where(cols.archived_at.is_(None))
    return query.where(cols.read_at.is_(None)) if filter == "unread" else query


@cache
def _page(kind: str, filter: Filter, muted: bool) -> Any:
    return (
        _filtered(kind, filter, muted)
        .where(notifications.c.id < bindparam("before"))
        .order_by(notifications.c.id.desc())
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
    )


@cache
def _unread_query(muted: bool) -> Any:
    """Unread ids of both parts, UNIONed: a notification counts once whatever its routes."""
    parts = [
        _filtered(k, "unread", muted).with_only_columns(notifications.c.id)
        for k in ("personal", "shared")
    ]
    return select(func.count()).select_from(union(*parts).subquery())


VISIBLE = union_all(
    _base("personal").where(notifications.c.id == bindparam("id")),
    _base("shared").where(notifications.c.id == bindparam("id")),
)


class Inbox:
    """Reads and state changes of one user's inbox."""

    db: Database
    types: TypeCache

    async def snapshot(self, user: str, names: list[str], unread: bool = True) -> Snapshot:
        """What a connection starts from, read in one transaction: the topics the user
        follows, every stream's head, its muted types and (optionally) the exact unread count
        as of those heads."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(follows.c.stream, follows.c.since_seq).where(
                    follows.c.user_id == user, follows.c.until_seq.is_(None)
                )
            )
            since = {stream: seq for stream, seq in rows.all()}
            topics = sorted(s for s in since if s.startswith(TOPIC_PREFIX))
            heads = await heads_in(conn, [*names, *topics])
            muted = await muted_types(conn, user, await self.types.get(conn))
            count = await self._unread(conn, user, muted) if unread else 0
        return Snapshot(heads, count, topics, muted, since)

    async def list_inbox(
        self, user: str, filter: Filter, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        async with self.db.read() as conn:
            muted = await muted_types(conn, user, await self.types.get(conn))
            params = {
                "user": user,
                "now": utcnow(),
                "limit": limit,
                "before": before or "~",
                "muted": list(muted),
            }
            rows = list((await conn.execute(_page("personal", filter, False), params)).all())
            rows += (await conn.execute(_page("shared", filter, bool(muted)), params)).all()
        rows.sort(key=lambda r: r[0], reverse=True)
        items: list[dict[str, Any]] = []
        for _id, doc, read_at, archived_at, seen_at, collapsed in rows:
            if items and items[-1]["id"] == _id:
                continue  # personal and shared at once: shown once
            item = orjson.loads(doc)
            item["read_at"] = iso(read_at)
            item["archived_at"] = iso(archived_at)
            item["seen_at"] = iso(seen_at)
            item["collapsed"] = collapsed or 0
            items.append(item)
        return items[:limit]

    async def _unread(
        self, conn: AsyncConnection, user: str, muted: frozenset[str] | None = None
    ) -> int:
        if muted is None:
            muted = await muted_types(conn, user, await self.types.get(conn))
        params = {"user": user, "now": utcnow(), "muted": list(muted)}
        result = await conn.execute(_unread_query(bool(muted)), params)
        return int(result.scalar() or 0)

    async def unread_count(self, user: str) -> int:
        async with self.db.read() as conn:
            return await self._unread(conn, user)

    async def _is_visible(self, conn: AsyncConnection, user: str, id: str) -> bool:
        params = {"user": user, "now": utcnow(), "id": id}
        return (await conn.execute(VISIBLE, params)).first() is not None

    async def change_state(self, user: str, change: Change, id: str | None) -> StateChanged:
        """Apply a read/unread/archive change, log it on the user's stream, count unread."""
        now = utcnow()
        async with self.db.write() as conn:
            ids: list[str] = []
            if id is not None:
                if not await self._is_visible(conn, user, id):
                    raise NotFound(f"notification {id} not found")
                column, value = {
                    "read": ("read_at", now),
                    "unread": ("read_at", None),
                    "archived": ("archived_at", now),
                }[change]
                values = {column: value}
                stmt = self.db.insert(inbox).values(
                    user_id=user, notification_id=id, personal=False, **values
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["user_id", "notification_id"], set_=values
                    )
                )
                ids = [id]
            else:
                await self._change_all(conn, user, change, now)
            stream = user_stream(user)
            seq = (await allocate(self.db, conn, {stream: 1}))[stream]
            unread = await self._unread(conn, user)
            payload = state_event(stream, seq, change, ids, iso(now) or "", unread)
            await conn.execute(
                insert(events).values(
                    stream=stream, seq=seq, kind="state", payload=payload, created_at=now
                )
            )
        return StateChanged(StoredEvent(stream, seq, payload), unread)

    async def _change_all(
        self, conn: AsyncConnection, user: str, change: Change, now: datetime
    ) -> None:
        column = "read_at" if change == "read_all" else "archived_at"
        # Shared notifications the user never acted on get a state row first...
        pending = (
            _base("shared")
            .where(STATE.c.user_id.is_(None))
            .with_only_columns(
                literal(user).label("user_id"),
                notifications.c.id.label("notification_id"),
                literal(False).label("personal"),
                literal(now).label(column),
            )
        )
        await conn.execute(
            insert(inbox).from_select(["user_id", "notification_id", "personal", column], pending),
            {"user": user, "now": now},
        )
        # ...then every row of the user without that mark gets it.
        await conn.execute(
            update(inbox)
            .where(
                inbox.c.user_id == user,
                inbox.c[column].is_(None),
                inbox.c.archived_at.is_(None),
            )
            .values({column: now})
        )
