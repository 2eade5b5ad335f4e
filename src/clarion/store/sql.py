"""The SQL store: SQLite (embedded default, WAL) and PostgreSQL through SQLAlchemy 2 async.

SQLite allows one writer at a time, so writes go through a one-connection engine that opens
`BEGIN IMMEDIATE` (no lock upgrades, no SQLITE_BUSY mid-transaction) while reads use a pool.
On PostgreSQL both are the same pool; per-stream row locks on `streams` order the writers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    DateTime,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    event,
    func,
    insert,
    literal,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from clarion.errors import NotFound, StoreUnavailable
from clarion.events import notification_event, state_event
from clarion.models import iso, utcnow
from clarion.store import migrate
from clarion.store.base import (
    ApiKey,
    Change,
    Draft,
    Filter,
    Published,
    StateChanged,
    StoredEvent,
)
from clarion.store.schema import (
    api_keys,
    events,
    follows,
    idempotency,
    inbox,
    notifications,
    streams,
    tickets,
)
from clarion.streams import user_stream

KEY_PREFIX = "clk_"
KEY_COLUMNS = (
    api_keys.c.id,
    api_keys.c.name,
    api_keys.c.scope,
    api_keys.c.created_at,
    api_keys.c.expires_at,
    api_keys.c.revoked_at,
    api_keys.c.last_used_at,
)


def async_url(url: str) -> str:
    """Map the URLs users type to SQLAlchemy async driver URLs."""
    for plain, driver in (
        ("sqlite:", "sqlite+aiosqlite:"),
        ("postgresql:", "postgresql+asyncpg:"),
        ("postgres:", "postgresql+asyncpg:"),
    ):
        if url.startswith(plain):
            return driver + url[len(plain) :]
    if url.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
        return url
    raise ValueError(f"unsupported database URL {url!r}: use sqlite:/// or postgresql://")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _visible(now: Any) -> Any:
    return or_(notifications.c.expires_at.is_(None), notifications.c.expires_at > now)


# Inbox queries are built once with bind parameters, so each call reuses SQLAlchemy's compiled
# statement: building them per call cost more CPU than running them.
USER = bindparam("user", type_=String)
NOW: Any = bindparam("now", type_=DateTime(timezone=True))
STATE = inbox.alias("state")
_PERSONAL_JOIN = inbox.join(notifications, notifications.c.id == inbox.c.notification_id)
_SHARED_JOIN = notifications.join(
    follows,
    and_(
        follows.c.user_id == USER,
        follows.c.stream == notifications.c.stream,
        notifications.c.seq > follows.c.since_seq,
    ),
).outerjoin(STATE, and_(STATE.c.user_id == USER, STATE.c.notification_id == notifications.c.id))


@cache
def _base(kind: str) -> Any:
    """A user's personal notifications, or those of the shared streams it follows."""
    cols = inbox.c if kind == "personal" else STATE.c
    query = select(
        notifications.c.id, notifications.c.doc, cols.read_at, cols.archived_at, cols.seen_at
    )
    if kind == "personal":
        query = query.select_from(_PERSONAL_JOIN).where(
            inbox.c.user_id == USER, inbox.c.personal.is_(True)
        )
    else:
        query = query.select_from(_SHARED_JOIN).where(notifications.c.stream.is_not(None))
    return query.where(_visible(NOW))


@cache
def _filtered(kind: str, filter: Filter) -> Any:
    cols = inbox.c if kind == "personal" else STATE.c
    query = _base(kind)
    if filter == "archived":
        return query.where(cols.archived_at.is_not(None))
    query = query.where(cols.archived_at.is_(None))
    return query.where(cols.read_at.is_(None)) if filter == "unread" else query


@cache
def _page(kind: str, filter: Filter) -> Any:
    return (
        _filtered(kind, filter)
        .where(notifications.c.id < bindparam("before"))
        .order_by(notifications.c.id.desc())
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
    )


UNREAD = select(func.count()).select_from(
    union_all(_filtered("personal", "unread"), _filtered("shared", "unread")).subquery()
)
VISIBLE = union_all(
    _base("personal").where(notifications.c.id == bindparam("id")),
    _base("shared").where(notifications.c.id == bindparam("id")),
)


class SQLStore:
    """The one store implementation; see the module docstring for the locking model."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = async_url(url)
        self.sqlite = self.url.startswith("sqlite")
        self._synchronous = sqlite_synchronous
        self.reader: AsyncEngine
        self.writer: AsyncEngine

    async def connect(self) -> None:
        if self.sqlite:
            self.writer = create_async_engine(self.url, pool_size=1, max_overflow=0)
            self.reader = create_async_engine(self.url, pool_size=4, max_overflow=4)
            self._sqlite_setup(self.writer, immediate=True)
            self._sqlite_setup(self.reader, immediate=False)
        else:
            self.writer = create_async_engine(
                self.url, pool_size=10, max_overflow=10, pool_pre_ping=True
            )
            self.reader = self.writer
        await migrate.upgrade(self.writer)

    def _sqlite_setup(self, engine: AsyncEngine, *, immediate: bool) -> None:
        synchronous = self._synchronous

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA busy_timeout=10000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    async def close(self) -> None:
        await self.writer.dispose()
        if self.reader is not self.writer:
            await self.reader.dispose()

    async def ping(self) -> None:
        try:
            async with self.reader.connect() as conn:
                await conn.execute(select(literal(1)))
        except (OperationalError, DBAPIError, OSError) as exc:
            raise StoreUnavailable(f"store unreachable: {type(exc).__name__}") from exc

    # -- streams ------------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        return sqlite_insert(table) if self.sqlite else pg_insert(table)

    async def _allocate(self, conn: AsyncConnection, counts: dict[str, int]) -> dict[str, int]:
        """Advance each stream by its count in one statement; returns the new heads. Sorted,
        so concurrent writers lock stream rows in one order (no deadlocks on PostgreSQL)."""
        stmt = self._insert(streams).values([{"name": n, "seq": counts[n]} for n in sorted(counts)])
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"], set_={"seq": streams.c.seq + stmt.excluded.seq}
        ).returning(streams.c.name, streams.c.seq)
        rows = (await conn.execute(stmt)).all()
        return {name: seq for name, seq in rows}

    async def heads(self, names: list[str]) -> dict[str, int]:
        async with self._read() as conn:
            return await self._heads(conn, names)

    async def snapshot(self, user: str, names: list[str]) -> tuple[dict[str, int], int]:
        """Stream heads and the user's unread count, read in one transaction: the count is
        exact as of those heads (what a connection needs to start)."""
        async with self._read() as conn:
            return await self._heads(conn, names), await self._unread(conn, user)

    async def _heads(self, conn: AsyncConnection, names: list[str]) -> dict[str, int]:
        if not names:
            return {}
        rows = (
            await conn.execute(
                select(streams.c.name, streams.c.seq).where(streams.c.name.in_(names))
            )
        ).all()
        found = {name: seq for name, seq in rows}
        return {n: found.get(n, 0) for n in names}

    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]:
        now = utcnow()
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(events.c.seq, events.c.payload)
                    .where(
                        events.c.stream == stream,
                        events.c.seq > seq,
                        or_(events.c.expires_at.is_(None), events.c.expires_at > now),
                    )
                    .order_by(events.c.seq)
                    .limit(limit)
                )
            ).all()
        return [StoredEvent(stream, s, bytes(p)) for s, p in rows]

    async def ensure_follows(self, pairs: list[tuple[str, str]]) -> None:
        """Start showing shared streams in users' inboxes from the streams' current heads on.
        Pairs already present keep their start."""
        names = sorted({stream for _, stream in pairs})
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(streams.c.name, streams.c.seq).where(streams.c.name.in_(names))
                )
            ).all()
            head = {name: seq for name, seq in rows}
            now = utcnow()
            stmt = self._insert(follows).values(
                [
                    {"user_id": u, "stream": n, "since_seq": head.get(n, 0), "created_at": now}
                    for u, n in dict.fromkeys(pairs)
                ]
            )
            await conn.execute(stmt.on_conflict_do_nothing())

    # -- publish ------------------------------------------------------------------------------

    async def publish(self, drafts: list[Draft]) -> list[Published]:
        """Store drafts in one transaction (group commit), each with its own result."""
        try:
            return await self._publish(drafts)
        except IntegrityError:
            # A concurrent publish elsewhere (another node, on PostgreSQL) committed one of our
            # idempotency keys first: redo them one by one, so only that one turns into a
            # duplicate. Its key is committed now, so the redo finds it and answers the replay.
            if len(drafts) > 1:
                return [(await self.publish([d]))[0] for d in drafts]
            return await self._publish(drafts)

    async def _publish(self, drafts: list[Draft]) -> list[Published]:
        results: dict[int, Published] = {}
        keys = [d.idempotency_key for d in drafts if d.idempotency_key]
        async with self._write() as conn:
            prior: dict[str, bytes] = {}
            if keys:
                rows = await conn.execute(
                    select(idempotency.c.key, idempotency.c.result).where(
                        idempotency.c.key.in_(keys)
                    )
                )
                prior = {k: r for k, r in rows.all()}
            fresh: list[tuple[int, Draft, list[str]]] = []
            for i, d in enumerate(drafts):
                if d.idempotency_key and d.idempotency_key in prior:
                    data = orjson.loads(prior[d.idempotency_key])
                    results[i] = Published(
                        data["id"], [], data["recipients"], True, data.get("streams", [])
                    )
                    continue
                users = list(dict.fromkeys(d.users))
                if d.idempotency_key:
                    prior[d.idempotency_key] = orjson.dumps(
                        {
                            "id": d.id,
                            "recipients": len(users),
                            "streams": [user_stream(u) for u in users] + d.shared,
                        }
                    )
                fresh.append((i, d, users))
            if not fresh:
                return [results[i] for i in range(len(drafts))]
            if any(d.idempotency_key for _, d, _ in fresh):
                await conn.execute(
                    insert(idempotency),
                    [
                        {
                            "key": d.idempotency_key,
                            "notification_id": d.id,
                            "result": prior[d.idempotency_key],
                            "created_at": d.created_at,
                        }
                        for _, d, _ in fresh
                        if d.idempotency_key
                    ],
                )
            counts: dict[str, int] = {}
            for _, d, users in fresh:
                for name in [user_stream(u) for u in users] + d.shared:
                    counts[name] = counts.get(name, 0) + 1
            heads = await self._allocate(conn, counts)
            next_seq = {name: heads[name] - counts[name] + 1 for name in counts}
            note_rows, event_rows, inbox_rows = [], [], []
            for i, d, users in fresh:
                stored = []
                for name in [user_stream(u) for u in users] + d.shared:
                    seq = next_seq[name]
                    next_seq[name] = seq + 1
                    stored.append(StoredEvent(name, seq, notification_event(name, seq, d.doc)))
                shared = stored[len(users)] if d.shared else None
                note_rows.append(
                    {
                        "id": d.id,
                        "type": d.type,
                        "priority": d.priority,
                        "stream": shared.stream if shared else None,
                        "seq": shared.seq if shared else None,
                        "collapse_key": d.collapse_key,
                        "doc": d.doc,
                        "created_at": d.created_at,
                        "expires_at": d.expires_at,
                        "publisher": d.publisher,
                    }
                )
                event_rows += [
                    {
                        "stream": e.stream,
                        "seq": e.seq,
                        "kind": "notification",
                        "notification_id": d.id,
                        "payload": e.payload,
                        "created_at": d.created_at,
                        "expires_at": d.expires_at,
                    }
                    for e in stored
                ]
                inbox_rows += [
                    {"user_id": u, "notification_id": d.id, "personal": True} for u in users
                ]
                results[i] = Published(d.id, stored, len(users))
            await conn.execute(insert(notifications), note_rows)
            await conn.execute(insert(events), event_rows)
            if inbox_rows:
                await conn.execute(insert(inbox), inbox_rows)
        return [results[i] for i in range(len(drafts))]

    # -- inbox --------------------------------------------------------------------------------

    async def list_inbox(
        self, user: str, filter: Filter, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        params = {"user": user, "now": utcnow(), "limit": limit, "before": before or "~"}
        async with self._read() as conn:
            rows = list((await conn.execute(_page("personal", filter), params)).all())
            rows += (await conn.execute(_page("shared", filter), params)).all()
        rows.sort(key=lambda r: r[0], reverse=True)
        items = []
        for _id, doc, read_at, archived_at, seen_at in rows[:limit]:
            item = orjson.loads(doc)
            item["read_at"] = iso(read_at)
            item["archived_at"] = iso(archived_at)
            item["seen_at"] = iso(seen_at)
            items.append(item)
        return items

    async def _unread(self, conn: AsyncConnection, user: str) -> int:
        result = await conn.execute(UNREAD, {"user": user, "now": utcnow()})
        return int(result.scalar() or 0)

    async def unread_count(self, user: str) -> int:
        async with self._read() as conn:
            return await self._unread(conn, user)

    async def _is_visible(self, conn: AsyncConnection, user: str, id: str) -> bool:
        params = {"user": user, "now": utcnow(), "id": id}
        return (await conn.execute(VISIBLE, params)).first() is not None

    async def change_state(self, user: str, change: Change, id: str | None) -> StateChanged:
        """Apply a read/unread/archive change, log it on the user's stream, count unread."""
        now = utcnow()
        async with self._write() as conn:
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
                stmt = self._insert(inbox).values(
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
            seq = (await self._allocate(conn, {stream: 1}))[stream]
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

    # -- API keys -----------------------------------------------------------------------------

    async def create_key(
        self, name: str, scope: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(8)
        secret = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        key = ApiKey(key_id, name, scope, utcnow(), expires_at)
        async with self._write() as conn:
            await conn.execute(
                insert(api_keys).values(
                    id=key.id,
                    name=name,
                    scope=scope,
                    hash=_hash(secret),
                    created_at=key.created_at,
                    expires_at=expires_at,
                )
            )
        return key, secret

    async def list_keys(self) -> list[ApiKey]:
        async with self._read() as conn:
            rows = (await conn.execute(select(*KEY_COLUMNS).order_by(api_keys.c.created_at))).all()
        return [ApiKey(*row) for row in rows]

    async def revoke_key(self, key_id: str) -> bool:
        async with self._write() as conn:
            result = await conn.execute(
                update(api_keys)
                .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=utcnow())
            )
        return bool(result.rowcount)

    async def verify_key(self, secret: str) -> ApiKey | None:
        """The key for a secret, if it is valid now. Compared in constant time."""
        if not secret.startswith(KEY_PREFIX) or secret.count("_") < 2:
            return None
        key_id = secret[len(KEY_PREFIX) :].split("_", 1)[0]
        async with self._read() as conn:
            row = (
                await conn.execute(
                    select(*KEY_COLUMNS, api_keys.c.hash).where(api_keys.c.id == key_id)
                )
            ).first()
        if row is None or not hmac.compare_digest(row.hash, _hash(secret)):
            return None
        key = ApiKey(*row[:7])
        if key.revoked_at is not None:
            return None
        if key.expires_at is not None and _aware(key.expires_at) <= utcnow():
            return None
        return key

    # -- tickets ------------------------------------------------------------------------------

    async def create_ticket(self, user: str, claims: dict[str, Any], ttl: float) -> str:
        ticket = secrets.token_urlsafe(32)
        now = utcnow()
        async with self._write() as conn:
            await conn.execute(delete(tickets).where(tickets.c.expires_at < now))
            await conn.execute(
                insert(tickets).values(
                    id=ticket,
                    user_id=user,
                    claims=orjson.dumps(claims),
                    expires_at=now + timedelta(seconds=ttl),
                )
            )
        return ticket

    async def consume_ticket(self, ticket: str) -> dict[str, Any] | None:
        """Single use: the DELETE that finds the row is the one that may use it."""
        async with self._write() as conn:
            row = (
                await conn.execute(
                    delete(tickets)
                    .where(tickets.c.id == ticket)
                    .returning(tickets.c.claims, tickets.c.expires_at)
                )
            ).first()
        if row is None or _aware(row.expires_at) <= utcnow():
            return None
        claims: dict[str, Any] = orjson.loads(row.claims)
        return claims

    # -- plumbing -----------------------------------------------------------------------------

    def _write(self) -> Any:
        return _guard(self.writer.begin())

    def _read(self) -> Any:
        return _guard(self.reader.connect())


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes; they were stored as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


@asynccontextmanager
async def _guard(ctx: Any) -> AsyncIterator[AsyncConnection]:
    """Turn a lost database into `StoreUnavailable` (503): nothing is acknowledged."""
    try:
        async with ctx as conn:
            yield conn
    except IntegrityError:
        raise
    except (DBAPIError, SATimeoutError, OSError) as exc:
        raise StoreUnavailable() from exc


def open_store(url: str) -> SQLStore:
    """The store for a database URL (`sqlite:///...` or `postgresql://...`)."""
    return SQLStore(url)
