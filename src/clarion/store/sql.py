"""The SQL store: SQLite (embedded default, WAL) and PostgreSQL through SQLAlchemy 2 async.

SQLite allows one writer at a time, so writes go through a one-connection engine that opens
`BEGIN IMMEDIATE` (no lock upgrades, no SQLITE_BUSY mid-transaction) while reads use a pool.
On PostgreSQL both are the same pool; per-stream row locks on `streams` order the writers.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
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
    tuple_,
    union,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from clarion import preferences as rules
from clarion.errors import Forbidden, NotFound, StoreUnavailable
from clarion.events import (
    follow_event,
    notification_event,
    preferences_event,
    state_event,
)
from clarion.models import iso, utcnow
from clarion.store import migrate
from clarion.store.base import (
    ApiKey,
    Change,
    Draft,
    Filter,
    Published,
    Snapshot,
    StateChanged,
    StoredEvent,
    TypeSettings,
    UserPreferences,
)
from clarion.store.fatigue import Router, digest_draft
from clarion.store.push import PushStore
from clarion.store.schema import (
    api_keys,
    digest_items,
    events,
    follows,
    idempotency,
    inbox,
    notification_streams,
    notifications,
    preferences,
    streams,
    tickets,
    type_settings,
    user_settings,
)
from clarion.streams import ROLE_PREFIX, TOPIC_PREFIX, matches, topic_of, user_stream

TYPES_CACHE_SECONDS = 5.0

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


class SQLStore:
    """The one store implementation; see the module docstring for the locking model."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL") -> None:
        self.url = async_url(url)
        self.sqlite = self.url.startswith("sqlite")
        self._synchronous = sqlite_synchronous
        self._types: dict[str, TypeSettings] | None = None
        self._types_at = 0.0
        self.push = PushStore(self)  # Web Push subscriptions and outbox (store/push.py)
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

    async def snapshot(self, user: str, names: list[str], unread: bool = True) -> Snapshot:
        """What a connection starts from, read in one transaction: the topics the user
        follows, every stream's head, its muted types and (optionally) the exact unread count
        as of those heads."""
        async with self._read() as conn:
            rows = await conn.execute(
                select(follows.c.stream, follows.c.since_seq).where(
                    follows.c.user_id == user, follows.c.until_seq.is_(None)
                )
            )
            since = {stream: seq for stream, seq in rows.all()}
            topics = sorted(s for s in since if s.startswith(TOPIC_PREFIX))
            heads = await self._heads(conn, [*names, *topics])
            muted = await self._muted(conn, user)
            count = await self._unread(conn, user, muted) if unread else 0
        return Snapshot(heads, count, topics, muted, since)

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

    # -- audiences ----------------------------------------------------------------------------

    async def sync_audiences(
        self, items: list[tuple[str, list[str], list[str]]]
    ) -> list[StoredEvent]:
        """Bring users' follows in line with their tokens, many users per transaction.

        Each item is (user, the shared streams its token gives: `all` and its roles, its
        `topics` claim patterns). Missing streams start at their current head; roles no longer
        in the token end; topics followed by claim alone end when the claim stops covering
        them (an `unfollow` event tells the user's live sessions)."""
        users = list(dict.fromkeys(u for u, _, _ in items))
        now = utcnow()
        out: list[StoredEvent] = []
        async with self._write() as conn:
            rows = (
                await conn.execute(
                    select(
                        follows.c.user_id, follows.c.stream, follows.c.until_seq, follows.c.granted
                    ).where(follows.c.user_id.in_(users))
                )
            ).all()
            have: dict[str, dict[str, tuple[int | None, bool]]] = {}
            for user, stream, until, granted in rows:
                have.setdefault(user, {})[stream] = (until, bool(granted))
            names = {n for _, shared, _ in items for n in shared}
            names |= {n for u in users for n in have.get(u, {})}
            head = await self._heads(conn, sorted(names))
            fresh, restart, end = [], [], []
            for user, shared, patterns in dict((u, (u, s, p)) for u, s, p in items).values():
                mine = have.get(user, {})
                for name in shared:
                    if name not in mine:
                        fresh.append({"user_id": user, "stream": name})
                    elif mine[name][0] is not None:
                        restart.append((user, name))
                for name, (until, granted) in mine.items():
                    if until is not None or name in shared:
                        continue
                    topic = topic_of(name)
                    if name.startswith(ROLE_PREFIX):
                        end.append((user, name, False))
                    elif topic is not None and not granted and not matches(topic, patterns):
                        end.append((user, name, True))
            if fresh:
                stmt = self._insert(follows).values(
                    [
                        {**f, "since_seq": head[f["stream"]], "created_at": now, "granted": False}
                        for f in fresh
                    ]
                )
                await conn.execute(stmt.on_conflict_do_nothing())
            for user, name in restart:
                await self._set_follow(conn, user, name, since_seq=head[name], until_seq=None)
            for user, name, tell in end:
                await self._set_follow(conn, user, name, until_seq=head[name])
                if tell:
                    out.append(await self._log_follow(conn, user, "unfollow", name, head[name]))
        return out

    async def _set_follow(self, conn: AsyncConnection, user: str, name: str, **values: Any) -> None:
        await conn.execute(
            update(follows)
            .where(follows.c.user_id == user, follows.c.stream == name)
            .values(**values)
        )

    async def _log_follow(
        self, conn: AsyncConnection, user: str, kind: str, name: str, at: int
    ) -> StoredEvent:
        return (await self._log_follows(conn, [user], kind, name, at))[0]

    async def _log_follows(
        self, conn: AsyncConnection, users: list[str], kind: str, name: str, at: int
    ) -> list[StoredEvent]:
        """A `follow`/`unfollow` event on each user's stream, in two statements for all."""
        if not users:
            return []
        heads = await self._allocate(conn, {user_stream(u): 1 for u in users})
        now = utcnow()
        out = []
        for user in users:
            stream = user_stream(user)
            out.append(
                StoredEvent(
                    stream, heads[stream], follow_event(stream, heads[stream], kind, name, at)
                )
            )
        await conn.execute(
            insert(events),
            [
                {
                    "stream": e.stream,
                    "seq": e.seq,
                    "kind": kind,
                    "payload": e.payload,
                    "created_at": now,
                }
                for e in out
            ],
        )
        return out

    async def follow(
        self, users: list[str], name: str, *, grant: bool, allowed: bool = True
    ) -> list[StoredEvent]:
        """Users start following a topic stream from its current head on (a no-op for those
        who already do). `grant`: the publisher subscribes them (and lets them re-follow);
        otherwise the user follows, which needs `allowed` (its token's claim) or a grant.
        A few statements for any number of users (a publisher subscribes up to 1,000 at once)."""
        users = list(dict.fromkeys(users))
        async with self._write() as conn:
            head = (await self._heads(conn, [name]))[name]
            rows = (
                await conn.execute(
                    select(follows.c.user_id, follows.c.until_seq, follows.c.granted).where(
                        follows.c.stream == name, follows.c.user_id.in_(users)
                    )
                )
            ).all()
            known = {u: (until, bool(granted)) for u, until, granted in rows}
            if not (grant or allowed) and not all(known.get(u, (0, False))[1] for u in users):
                raise Forbidden(f"not allowed to follow {topic_of(name) or name!r}")
            fresh = [u for u in users if u not in known]
            again = [u for u in users if u in known and known[u][0] is not None]
            upgrade = [u for u in users if u in known and known[u][0] is None and not known[u][1]]
            if fresh:
                now = utcnow()
                await conn.execute(
                    insert(follows),
                    [
                        {
                            "user_id": u,
                            "stream": name,
                            "since_seq": head,
                            "created_at": now,
                            "granted": grant,
                        }
                        for u in fresh
                    ],
                )
            where = follows.c.stream == name
            grant_value = {"granted": True} if grant else {}
            if again:
                await conn.execute(
                    update(follows)
                    .where(where, follows.c.user_id.in_(again))
                    .values(since_seq=head, until_seq=None, **grant_value)
                )
            if upgrade and grant:
                await conn.execute(
                    update(follows)
                    .where(where, follows.c.user_id.in_(upgrade))
                    .values(granted=True)
                )
            return await self._log_follows(conn, fresh + again, "follow", name, head)

    async def unfollow(self, users: list[str], name: str, *, revoke: bool) -> list[StoredEvent]:
        """Users stop following a topic: what came before stays in their inboxes. `revoke`
        (the publisher) also withdraws the grant."""
        users = list(dict.fromkeys(users))
        async with self._write() as conn:
            head = (await self._heads(conn, [name]))[name]
            where = and_(follows.c.stream == name, follows.c.user_id.in_(users))
            active = list(
                (
                    await conn.execute(
                        select(follows.c.user_id).where(where, follows.c.until_seq.is_(None))
                    )
                ).scalars()
            )
            if revoke:
                await conn.execute(update(follows).where(where).values(granted=False))
            if active:
                await conn.execute(
                    update(follows)
                    .where(follows.c.stream == name, follows.c.user_id.in_(active))
                    .values(until_seq=head)
                )
            return await self._log_follows(conn, active, "unfollow", name, head)

    async def followed(self, user: str) -> list[tuple[str, bool]]:
        """The topic streams a user follows now, with whether the publisher granted them."""
        async with self._read() as conn:
            rows = (
                await conn.execute(
                    select(follows.c.stream, follows.c.granted)
                    .where(
                        follows.c.user_id == user,
                        follows.c.stream.startswith(TOPIC_PREFIX),
                        follows.c.until_seq.is_(None),
                    )
                    .order_by(follows.c.stream)
                )
            ).all()
        return [(stream, bool(granted)) for stream, granted in rows]

    async def followers(self, name: str, after: str | None, limit: int) -> list[str]:
        async with self._read() as conn:
            rows = await conn.execute(
                select(follows.c.user_id)
                .where(
                    follows.c.stream == name,
                    follows.c.until_seq.is_(None),
                    follows.c.user_id > (after or ""),
                )
                .order_by(follows.c.user_id)
                .limit(limit)
            )
            return list(rows.scalars())

    # -- preferences --------------------------------------------------------------------------

    async def _type_map(self, conn: AsyncConnection) -> dict[str, TypeSettings]:
        """Per-type settings, cached a few seconds (they change rarely; writes here reset it)."""
        now = time.monotonic()
        if self._types is None or self._types_at < now:
            rows = (await conn.execute(select(type_settings))).all()
            self._types = {r.type: TypeSettings(*r) for r in rows}
            self._types_at = now + TYPES_CACHE_SECONDS
        return self._types

    async def type_settings(self) -> dict[str, TypeSettings]:
        async with self._read() as conn:
            return dict(await self._type_map(conn))

    async def put_type_settings(self, value: TypeSettings) -> None:
        row = {
            "type": value.type,
            "in_app": value.in_app,
            "push": value.push,
            "mandatory": value.mandatory,
            "throttle_count": value.throttle_count,
            "throttle_seconds": value.throttle_seconds,
            "digest_seconds": value.digest_seconds,
        }
        async with self._write() as conn:
            stmt = self._insert(type_settings).values(row)
            await conn.execute(stmt.on_conflict_do_update(index_elements=["type"], set_=row))
        self._types = None

    async def delete_type_settings(self, type: str) -> bool:
        async with self._write() as conn:
            result = await conn.execute(delete(type_settings).where(type_settings.c.type == type))
        self._types = None
        return bool(result.rowcount)

    async def _prefs(self, conn: AsyncConnection, user: str) -> UserPreferences:
        rows = (
            await conn.execute(
                select(preferences.c.type, preferences.c.in_app, preferences.c.push).where(
                    preferences.c.user_id == user
                )
            )
        ).all()
        prefs = UserPreferences(types={t: (a, p) for t, a, p in rows})
        row = (
            await conn.execute(select(user_settings).where(user_settings.c.user_id == user))
        ).first()
        if row is not None:
            prefs.timezone, prefs.quiet_start, prefs.quiet_end = row[1:]
        return prefs

    async def _muted(self, conn: AsyncConnection, user: str) -> frozenset[str]:
        rows = (
            await conn.execute(
                select(preferences.c.type, preferences.c.in_app).where(
                    preferences.c.user_id == user, preferences.c.in_app.is_not(None)
                )
            )
        ).all()
        prefs = UserPreferences(types={t: (a, None) for t, a in rows})
        return rules.muted(prefs, await self._type_map(conn))

    async def preferences(self, user: str) -> tuple[UserPreferences, dict[str, TypeSettings]]:
        async with self._read() as conn:
            return await self._prefs(conn, user), dict(await self._type_map(conn))

    async def put_preferences(
        self,
        user: str,
        types: dict[str, tuple[bool | None, bool | None]],
        zone: tuple[str | None, str | None, str | None] | None,
    ) -> StoredEvent:
        """Store a user's choices (None: back to the app's default) and tell its sessions
        which types are muted now (`preferences` event on the user's stream)."""
        async with self._write() as conn:
            for type, (in_app, push) in types.items():
                where = and_(preferences.c.user_id == user, preferences.c.type == type)
                await conn.execute(delete(preferences).where(where))
                if in_app is not None or push is not None:
                    await conn.execute(
                        insert(preferences).values(
                            user_id=user, type=type, in_app=in_app, push=push
                        )
                    )
            if zone is not None:
                timezone, start, end = zone
                row = {"timezone": timezone or "UTC", "quiet_start": start, "quiet_end": end}
                stmt = self._insert(user_settings).values(user_id=user, **row)
                await conn.execute(stmt.on_conflict_do_update(index_elements=["user_id"], set_=row))
            muted = sorted(await self._muted(conn, user))
            stream = user_stream(user)
            seq = (await self._allocate(conn, {stream: 1}))[stream]
            payload = preferences_event(stream, seq, muted)
            await conn.execute(
                insert(events).values(
                    stream=stream, seq=seq, kind="preferences", payload=payload, created_at=utcnow()
                )
            )
        return StoredEvent(stream, seq, payload)

    # -- publish ------------------------------------------------------------------------------

    async def publish(self, drafts: list[Draft]) -> list[Published]:
        """Store drafts in one transaction (group commit), each with its own result."""
        try:
            async with self._write() as conn:
                return await self._publish(conn, drafts)
        except IntegrityError:
            # A concurrent publish elsewhere (another node, on PostgreSQL) committed one of our
            # idempotency keys (or throttle rows) first: redo them one by one, so only that one
            # turns into a duplicate. Its key is committed now, so the redo finds it.
            if len(drafts) > 1:
                return [(await self.publish([d]))[0] for d in drafts]
            async with self._write() as conn:
                return await self._publish(conn, drafts)

    async def _publish(self, conn: AsyncConnection, drafts: list[Draft]) -> list[Published]:
        results: dict[int, Published] = {}
        keys = [d.idempotency_key for d in drafts if d.idempotency_key]
        prior: dict[str, bytes] = {}
        if keys:
            rows = await conn.execute(
                select(idempotency.c.key, idempotency.c.result).where(idempotency.c.key.in_(keys))
            )
            prior = {k: r for k, r in rows.all()}
        fresh: list[tuple[int, Draft]] = []
        first: dict[str, int] = {}  # a key repeated within this batch: a replay of the first
        repeats: dict[int, int] = {}
        for i, d in enumerate(drafts):
            if d.idempotency_key and d.idempotency_key in prior:
                data = orjson.loads(prior[d.idempotency_key])
                results[i] = Published(
                    data["id"], [], data["recipients"], True, data.get("streams", [])
                )
                continue
            if d.idempotency_key in first:
                repeats[i] = first[d.idempotency_key]
                continue
            d.users = list(dict.fromkeys(d.users))
            if d.idempotency_key:
                first[d.idempotency_key] = i
            fresh.append((i, d))
        if not fresh:
            return [results[i] for i in range(len(drafts))]
        now = utcnow()
        routes = await Router(self, conn, now).route([d for _, d in fresh])
        counts: dict[str, int] = {}
        for (_, d), route in zip(fresh, routes, strict=True):
            for name in [user_stream(u) for u in route.users] + d.shared:
                counts[name] = counts.get(name, 0) + 1
        heads = await self._allocate(conn, counts) if counts else {}
        next_seq = {name: heads[name] - counts[name] + 1 for name in counts}
        note_rows, event_rows, inbox_rows, shared_rows, id_rows = [], [], [], [], []
        for (i, d), route in zip(fresh, routes, strict=True):
            # Shared streams take precedence over personal copies, earlier (sorted) shared
            # streams over later ones: each copy names those above it (`Session.wants`).
            shared = sorted(d.shared)
            seqs = {}
            for name in shared:
                seqs[name] = next_seq[name]
                next_seq[name] += 1
            stored: list[StoredEvent] = []
            for user in route.users:
                name = user_stream(user)
                seq = next_seq[name]
                next_seq[name] = seq + 1
                replaces, collapsed = route.replaced.get(user, ([], 0))
                payload = notification_event(
                    name, seq, d.doc, also=seqs, replaces=replaces, collapsed=collapsed
                )
                stored.append(StoredEvent(name, seq, payload))
            replaces, collapsed = route.replaced.get(None, ([], 0))
            for rank, name in enumerate(shared):
                above = {s: seqs[s] for s in shared[:rank]}
                payload = notification_event(
                    name, seqs[name], d.doc, also=above, replaces=replaces, collapsed=collapsed
                )
                stored.append(StoredEvent(name, seqs[name], payload))
            note_rows.append(
                {
                    "id": d.id,
                    "type": d.type,
                    "priority": d.priority,
                    "collapse_key": d.collapse_key,
                    "doc": d.doc,
                    "created_at": d.created_at,
                    "expires_at": d.expires_at,
                    "publisher": d.publisher,
                    "collapsed": route.replaced.get(None, ([], 0))[1],
                    "replaced_by": route.replaced_by.get(None),
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
            shared_rows += [
                {"stream": e.stream, "seq": e.seq, "notification_id": d.id}
                for e in stored[len(route.users) :]
            ]
            inbox_rows += [
                {
                    "user_id": u,
                    "notification_id": d.id,
                    "personal": True,
                    "collapsed": route.replaced.get(u, ([], 0))[1],
                    "replaced_by": route.replaced_by.get(u),
                }
                for u in route.users
            ]
            streams_out = [user_stream(u) for u in route.users] + d.shared
            result = Published(d.id, stored, len(route.users), held=route.held)
            result.skipped = route.skipped
            result.replayed_streams = streams_out
            results[i] = result
            if d.idempotency_key:
                doc = {"id": d.id, "recipients": len(route.users), "streams": streams_out}
                id_rows.append(
                    {
                        "key": d.idempotency_key,
                        "notification_id": d.id,
                        "result": orjson.dumps(doc),
                        "created_at": d.created_at,
                    }
                )
        if id_rows:
            await conn.execute(insert(idempotency), id_rows)
        await conn.execute(insert(notifications), note_rows)
        if event_rows:
            await conn.execute(insert(events), event_rows)
        if shared_rows:
            await conn.execute(insert(notification_streams), shared_rows)
        if inbox_rows:
            await conn.execute(insert(inbox), inbox_rows)
        # Web Push: the outbox rows commit with the notification (store/push.py).
        await self.push.queue(
            conn, [(d, r.users) for (_, d), r in zip(fresh, routes, strict=True)], now
        )
        for j, i in repeats.items():
            done = results[i]
            results[j] = Published(done.id, [], done.recipients, True, done.replayed_streams)
        return [results[i] for i in range(len(drafts))]

    async def flush_digests(self, now: datetime, limit: int = 100) -> list[Published]:
        """Publish the digests that are due: one summary per user and type, in the same
        transaction that removes their items (so a crash repeats nothing and loses nothing;
        on PostgreSQL the DELETE's row locks keep two nodes from sending one digest twice)."""
        async with self._read() as conn:  # the common case, nothing due, takes no write lock
            due_at = digest_items.c.due_at
            if (await conn.execute(select(due_at).where(due_at <= now).limit(1))).first() is None:
                return []
        async with self._write() as conn:
            due = (
                await conn.execute(
                    select(digest_items.c.user_id, digest_items.c.type)
                    .where(digest_items.c.due_at <= now)
                    .group_by(digest_items.c.user_id, digest_items.c.type)
                    .limit(limit)
                )
            ).all()
            if not due:
                return []
            taken = (
                await conn.execute(
                    delete(digest_items)
                    .where(
                        tuple_(digest_items.c.user_id, digest_items.c.type).in_(
                            [tuple(r) for r in due]
                        )
                    )
                    .returning(
                        digest_items.c.user_id, digest_items.c.type, digest_items.c.notification_id
                    )
                )
            ).all()
            ids = sorted({nid for _, _, nid in taken})
            docs = {
                nid: orjson.loads(doc)
                for nid, doc in (
                    await conn.execute(
                        select(notifications.c.id, notifications.c.doc).where(
                            notifications.c.id.in_(ids)
                        )
                    )
                ).all()
            }
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for user, type, nid in sorted(taken, key=lambda r: r[2]):
                if nid in docs:
                    groups.setdefault((user, type), []).append(docs[nid])
            drafts = [
                digest_draft(user, type, items, now) for (user, type), items in groups.items()
            ]
            return await self._publish(conn, drafts) if drafts else []

    # -- inbox --------------------------------------------------------------------------------

    async def list_inbox(
        self, user: str, filter: Filter, limit: int, before: str | None
    ) -> list[dict[str, Any]]:
        async with self._read() as conn:
            muted = await self._muted(conn, user)
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
            muted = await self._muted(conn, user)
        params = {"user": user, "now": utcnow(), "muted": list(muted)}
        result = await conn.execute(_unread_query(bool(muted)), params)
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

    # -- retention ----------------------------------------------------------------------------

    async def purge(self, before: datetime | None, now: datetime, batch: int = 500) -> int:
        """Remove one batch of notifications created before `before` or expired, with their
        events, routes and per-user state; returns how many. Small transactions, so live
        traffic waits for the writer a few milliseconds at most."""
        old = notifications.c.expires_at < now
        if before is not None:
            old = or_(old, notifications.c.created_at < before)
        async with self._write() as conn:
            ids = list(
                (await conn.execute(select(notifications.c.id).where(old).limit(batch))).scalars()
            )
            if ids:
                await conn.execute(delete(events).where(events.c.notification_id.in_(ids)))
                await conn.execute(delete(NS).where(NS.c.notification_id.in_(ids)))
                await conn.execute(delete(inbox).where(inbox.c.notification_id.in_(ids)))
                await conn.execute(
                    delete(digest_items).where(digest_items.c.notification_id.in_(ids))
                )
                await conn.execute(delete(notifications).where(notifications.c.id.in_(ids)))
            if before is not None and len(ids) < batch:
                stale = (
                    await conn.execute(
                        select(events.c.stream, events.c.seq)
                        .where(events.c.notification_id.is_(None), events.c.created_at < before)
                        .limit(batch - len(ids))
                    )
                ).all()
                if stale:
                    await conn.execute(
                        delete(events).where(
                            tuple_(events.c.stream, events.c.seq).in_([tuple(r) for r in stale])
                        )
                    )
                    return len(ids) + len(stale)
        return len(ids)

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
