"""The inbox in the store: loads the facts that clarion/inbox.py decides on, and writes what a
user does (marks one notification, or moves a stream's watermarks for read-all / archive-all).

Every query here is keyed by the user or by one stream and a seq range of it, on an index that
starts with those columns (see docs/architecture.md for the PostgreSQL plans), so its cost does
not grow with the notifications stored: ordinal probes for counts, keyset pages per stream.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from sqlalchemy import (
    BigInteger,
    Connection,
    DateTime,
    Integer,
    bindparam,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from clarion import inbox as rules
from clarion import preferences as prefs
from clarion.domain import (
    Change,
    Filter,
    InboxPage,
    Meta,
    NotFound,
    Snapshot,
    StateChanged,
    StoredEvent,
    TypeSettings,
    UserPreferences,
    iso,
    utcnow,
)
from clarion.events import state_event
from clarion.inbox import Mark, PagePosition, Route, Source, View, Views
from clarion.store import holes, raw
from clarion.store.batches import padded, padded_size
from clarion.store.db import Database, aware
from clarion.store.schema import (
    events,
    follows,
    marks,
    notifications,
    preferences,
    routes,
    streams,
    watermarks,
)
from clarion.store.settings import TypeCache
from clarion.store.streams import allocate_in
from clarion.store.webhooks import NO_HOOKS, Hooks, change_events, queue_in
from clarion.streams import TOPIC_PREFIX, user_stream

ROUTE = (
    routes.c.stream,
    routes.c.seq,
    routes.c.notification_id,
    routes.c.type,
    routes.c.expires_at,
    routes.c.replaced,
    routes.c.also,
)
WATERMARK_COLUMNS = ("read_seq", "archived_seq", "read_at", "archived_at")


def to_route(row: Any) -> Route:
    stream, seq, id, type, expires_at, replaced, also = row[:7]
    return Route(
        stream,
        seq,
        id,
        type,
        aware(expires_at) if expires_at is not None else None,
        bool(replaced),
        orjson.loads(also) if also else {},
    )


@dataclass(slots=True)
class Listed:
    id: str
    seq: int
    doc: bytes
    state: rules.State
    seen_at: datetime | None
    collapsed: int


@dataclass(slots=True)
class Facts:
    """What one user's inbox is made of, read in one transaction."""

    views: dict[str, View]
    marked: list[tuple[Mark, list[Route]]]
    irregular: list[Route]  # in the views' unread windows: irregular, or expired not swept
    first: dict[str, int]  # per viewed stream, its oldest route still stored (retention)
    heads: dict[str, int]
    since: dict[str, int]  # shared streams followed now: where following began
    muted: frozenset[str]  # types the user does not want in-app


def _oldest(stream: Any) -> Any:
    first = select(routes.c.seq).where(routes.c.stream == stream).order_by(routes.c.seq)
    return first.limit(1).scalar_subquery()


def _views_query() -> Any:
    """For several users at once (`:users`): every stream each follows or followed, with its
    head and its oldest route; the heads of `:names`; the users' watermarks. One round trip."""
    w, f, s = watermarks, follows, streams
    users: Any = bindparam("users", expanding=True)
    names: Any = bindparam("names", expanding=True)
    none = null()
    return union_all(  # the typed columns (timestamps) first, so SQLite's come back as such
        select(literal("w"), w.c.user_id, w.c.stream, w.c.read_seq, w.c.archived_seq, none)
        .add_columns(none, w.c.read_at, w.c.archived_at, w.c.seen_seq)
        .where(w.c.user_id.in_(users)),
        select(literal("f"), f.c.user_id, f.c.stream, f.c.since_seq, f.c.until_seq, s.c.seq)
        .add_columns(_oldest(f.c.stream), none, none, literal(0))
        .select_from(f.outerjoin(s, s.c.name == f.c.stream))
        .where(f.c.user_id.in_(users)),
        select(literal("h"), none, s.c.name, literal(0), none, s.c.seq)
        .add_columns(_oldest(s.c.name), none, none, literal(0))
        .where(s.c.name.in_(names)),
    )


# Statements are built once per shape with bind parameters and reused: building and keying a
# statement of this size per call cost more CPU than running it.
VIEWS = _views_query()


NOW: Any = bindparam("now", type_=DateTime(timezone=True))
Window = tuple[str, int, int]  # stream, unread from (exclusive), up to (inclusive)


@lru_cache(maxsize=64)
def _marks_and_irregular(windows: int) -> Any:
    """For several users at once (`:users`): their marks with their notifications' routes,
    their in-app preferences (tagged "p"), and the routes of `windows` unread windows (`:s<i>`,
    `:lo<i>`, `:hi<i>`; tagged "i" with the window's index) that the count looks at one by one:
    the irregular ones, and the regular ones expired by `:now` that the sweep has not hidden
    yet (store/holes.py). One round trip."""
    m, p = marks, preferences
    users: Any = bindparam("users", expanding=True)
    none = null()
    parts = [
        select(literal("m"), m.c.user_id, m.c.notification_id, m.c.read_at, m.c.unread)
        .add_columns(m.c.archived_at, m.c.seen_at, *ROUTE)
        .select_from(m.join(routes, routes.c.notification_id == m.c.notification_id))
        .where(m.c.user_id.in_(users)),
        select(literal("p"), p.c.user_id, p.c.type, none, p.c.in_app, none, none)
        .add_columns(*[none] * len(ROUTE))
        .where(p.c.user_id.in_(users), p.c.in_app.is_not(None)),
    ]
    for i in range(windows):
        stream: Any = bindparam(f"s{i}")
        lo: Any = bindparam(f"lo{i}")
        hi: Any = bindparam(f"hi{i}")
        tagged = select(literal("i"), literal(str(i)), none, none, none, none, none, *ROUTE)
        parts.append(
            tagged.where(
                routes.c.stream == stream,
                holes.irregular_is(holes.IRREGULAR),
                routes.c.seq > lo,
                routes.c.seq <= hi,
            )
        )
        parts.append(tagged.where(holes.expired(stream, lo, hi, NOW)))
    return union_all(*parts)


def _windows(views: dict[str, View]) -> list[tuple[View, int, int]]:
    return [(v, v.unread_from, v.hi) for v in views.values() if v.unread_from < v.hi]


def load_facts(
    conn: Connection,
    wanted: list[tuple[str, Sequence[str]]],
    types: dict[str, TypeSettings],
    now: datetime,
) -> list[Facts]:
    """Each user's views (personal stream, every shared stream it follows or followed), the
    heads of those and of its extra streams, its muted types, its marks with their routes, and
    the routes its unread count as of `now` must look at one by one (irregular, or expired and
    not swept yet): two round trips for all of them (a storm of connections reads its snapshots
    together)."""
    users = list(dict.fromkeys(u for u, _ in wanted))
    names = sorted({n for u, extra in wanted for n in (user_stream(u), *extra)})
    stream_heads: dict[str, int] = dict.fromkeys(names, 0)
    oldest: dict[str, int] = {}
    followed: dict[str, list[tuple[str, int, int | None]]] = {u: [] for u in users}
    lines: dict[tuple[str, str], tuple[int, int, Any, Any, int]] = {}
    for tag, user, stream, a, b, head, first, read_at, archived_at, seen in raw.query(
        conn, VIEWS, {"users": padded(users), "names": padded(names)}
    ):
        if tag == "w":
            lines[(user, stream)] = (a, b, read_at, archived_at, seen or 0)
            continue
        stream_heads[stream] = head or 0
        if first is not None:
            oldest[stream] = first
        if tag == "f":
            followed[user].append((stream, a, b))
    facts: dict[str, Facts] = {}
    windows: dict[Window, int] = {}
    for user in users:
        personal = user_stream(user)
        spans = [(personal, 0, None), *followed[user]]
        views: dict[str, View] = {}
        for stream, lo, until in spans:
            read, archived, read_at, archived_at, seen = lines.get(
                (user, stream), (0, 0, None, None, 0)
            )
            hi = until if until is not None else stream_heads.get(stream, 0)
            views[stream] = View(
                stream, lo, hi, read, archived, _at(read_at), _at(archived_at), seen=seen
            )
        since = {stream: lo for stream, lo, until in followed[user] if until is None}
        first = {s: oldest[s] for s in views if s in oldest}
        facts[user] = Facts(views, [], [], first, stream_heads, since, frozenset())
        for v, lo, hi in _windows(views):
            windows.setdefault((v.stream, lo, hi), len(windows))
    order = list(windows)
    found: dict[int, list[Route]] = {}
    marked: dict[str, dict[str, tuple[Mark, list[Route]]]] = {u: {} for u in users}
    chosen: dict[str, dict[str, tuple[bool | None, bool | None]]] = {u: {} for u in users}
    # Padded (users repeated, windows that match nothing), so that the batch's size does not
    # change the SQL: each text is a prepared statement cached per connection (batches.py).
    params: dict[str, Any] = {"users": padded(users), "now": now}
    size = padded_size(len(order))
    for i, (stream, lo, hi) in enumerate(order + [("", 0, 0)] * (size - len(order))):
        params |= {f"s{i}": stream, f"lo{i}": lo, f"hi{i}": hi}
    for row in raw.query(conn, _marks_and_irregular(size), params):
        tag, user = row[0], row[1]
        if tag == "i":
            found.setdefault(int(user), []).append(to_route(row[7:]))
        elif tag == "p":
            chosen[user][row[2]] = (bool(row[4]), None)
        else:
            id, read_at, unread, archived_at, seen_at = row[2:7]
            by_id = marked[user]
            if id not in by_id:
                mark = Mark(id, _at(read_at), bool(unread), _at(archived_at), _at(seen_at))
                by_id[id] = (mark, [])
            if row[7] in facts[user].views:  # filtered here: one index serves the join
                by_id[id][1].append(to_route(row[7:]))
    out = []
    for user, extra in wanted:  # a user may be asked for twice (two tabs): a Facts each
        base, personal = facts[user], user_stream(user)
        muted = prefs.muted(UserPreferences(types=chosen[user]), types)
        views = base.views
        if muted:  # personal notifications of a muted type were skipped when published
            views = {k: v if k == personal else replace(v, muted=muted) for k, v in views.items()}
        irregular = [
            r for v, lo, hi in _windows(views) for r in found.get(windows[(v.stream, lo, hi)], [])
        ]
        heads = {n: stream_heads.get(n, 0) for n in (personal, *extra, *base.since)}
        marks_of = list(marked[user].values())
        out.append(Facts(views, marks_of, irregular, base.first, heads, base.since, muted))
    return out


def _at(value: datetime | None) -> datetime | None:
    return aware(value) if value is not None else None


def _n_at(stream: Any, seq: Any, type: Any = None) -> Any:
    """How many routes (of `type`) the stream has had up to `seq`: the ordinal of the last one at
    or below it, else one less than that of the first above it (retention deletes prefixes)."""
    col = routes.c.n if type is None else routes.c.tn
    where = [routes.c.stream == stream] + ([routes.c.type == type] if type is not None else [])
    below = select(col).where(*where, routes.c.seq <= seq).order_by(routes.c.seq.desc()).limit(1)
    above = select(col - 1).where(*where, routes.c.seq > seq).order_by(routes.c.seq).limit(1)
    return func.coalesce(below.scalar_subquery(), above.scalar_subquery(), 0)


@lru_cache(maxsize=256)
def _probes(shape: tuple[tuple[int, bool], ...]) -> Any:
    """One statement of scalar probes for windows of this shape (per window: how many muted
    types, and whether its range spans several hole buckets): per window `:s<i>`, `:lo<i>`,
    `:hi<i>`, muted types `:t<i>_<j>` and `:w<i>mu`, and the hole bounds (store/holes.py)."""
    probes: list[Any] = []
    for i, (muted, split) in enumerate(shape):
        stream: Any = bindparam(f"s{i}")
        lo: Any = bindparam(f"lo{i}", type_=BigInteger)
        hi: Any = bindparam(f"hi{i}", type_=BigInteger)
        probes += [_n_at(stream, hi), _n_at(stream, lo)]
        for j in range(muted):
            kind: Any = bindparam(f"t{i}_{j}")
            probes += [_n_at(stream, hi, kind), _n_at(stream, lo, kind)]
        probes.append(holes.hidden_in(f"w{i}", stream, split, muted > 0))
    return select(*probes)


def _kept(facts: Facts, stream: str, lo: int, hi: int) -> int:
    """Where the routes a window can count begin: retention deleted the stream's routes up to
    the oldest one kept (`first`). A stream with no route left counts nothing: its window is
    empty (hi), not the whole range, whose hole buckets may still count routes retention
    deleted (the bucket of its last deletion stays: hidden routes above it may remain)."""
    return max(lo, facts.first.get(stream, hi + 1) - 1)


def count_unread(conn: Connection, many: list[Facts], now: datetime) -> list[int]:
    """Each exact unread count: per window, its routes by ordinals, less those of muted types
    (per-type ordinals) and the hidden ones (store/holes.py), all windows of all users in one
    round trip; then clarion/inbox.py's arithmetic over the irregular routes and the marks."""
    keys: dict[tuple[str, int, int, frozenset[str], int], int] = {}
    for facts in many:
        for v, lo, hi in _windows(facts.views):
            kept = _kept(facts, v.stream, lo, hi)
            keys.setdefault((v.stream, lo, hi, v.muted, kept), len(keys))
    values: dict[tuple[str, int, int, frozenset[str], int], list[Any]] = {}
    per = SQLITE_WINDOWS if conn.dialect.name == "sqlite" else None
    for chunk in _probe_chunks(list(keys), per):
        shape: list[tuple[int, bool]] = []
        params: dict[str, Any] = {}
        for i, ((stream, lo, hi, muted, kept), _) in enumerate(chunk):
            split, bounds = holes.hidden_params(f"w{i}", kept, hi)
            shape.append((len(muted), split))
            params |= bounds | {f"s{i}": stream, f"lo{i}": lo, f"hi{i}": hi}
            for j, type in enumerate(sorted(muted)):
                params[f"t{i}_{j}"] = type
            if muted:
                params[f"w{i}mu"] = sorted(muted)
        (one,) = raw.query(conn, _probes(tuple(shape)), params)
        row = iter(one)
        for (key, real), (muted_count, _) in zip(chunk, shape, strict=True):
            got = [next(row) for _ in range(3 + 2 * muted_count)]
            if real:
                values[key] = got
    out = []
    for facts in many:
        counted: dict[str, int] = {}
        for v, lo, hi in _windows(facts.views):
            kept = _kept(facts, v.stream, lo, hi)
            got = values[(v.stream, lo, hi, v.muted, kept)]
            total = got[0] - got[1]
            for j in range(len(v.muted)):
                total -= got[2 + 2 * j] - got[3 + 2 * j]
            counted[v.stream] = int(total - got[-1])
        out.append(rules.unread_count(facts.views, counted, facts.irregular, facts.marked, now))
    return out


MAX_COLUMNS = 1_500
# On SQLite a statement of scalar subqueries costs more per subquery the more it holds (a
# window's probes: 9 us each in a statement of 8 windows, 11 at 16, 70 at 128, measured
# in-process on bench/history.py's store of a million, docs/benchmarks.md), so its windows go
# 8 to a statement; PostgreSQL takes them all in one (each statement is a round trip there).
SQLITE_WINDOWS = 8

WindowKey = tuple[str, int, int, frozenset[str], int]  # stream, lo, hi, muted types, kept


def _probe_chunks(
    keys: list[WindowKey], per_statement: int | None = None
) -> list[list[tuple[WindowKey, bool]]]:
    """The windows to probe, one statement per list: grouped by probe shape (muted types, split
    range), each group cut into statements of `per_statement` windows or as many as fit under
    MAX_COLUMNS result columns (SQLite allows 2,000), rounded down to a power of two, and
    padded to that size (a group of one statement: to a power of two) with windows of its
    shape on stream "" (no such stream: they count nothing, marked not real). A statement
    thus depends on one group's shape and padded size: a few dozen SQL texts in all, each
    compiled once and a prepared statement cached per connection (store/batches.py). Groups
    are never mixed in one statement: every mix of a batch's group sizes would be a text of
    its own, compiled anew (in a connect storm of users with history that was a third of a
    handshake's CPU)."""
    groups: dict[tuple[int, bool], list[WindowKey]] = {}
    for key in keys:
        split, _ = holes.hidden_params("w", key[4], key[2])
        groups.setdefault((len(key[3]), split), []).append(key)
    out: list[list[tuple[WindowKey, bool]]] = []
    for (muted, _), group in sorted(groups.items()):
        blank = ("", *group[-1][1:])
        per = min(MAX_COLUMNS // (3 + 2 * muted), per_statement or MAX_COLUMNS)
        per = 1 << (max(1, per).bit_length() - 1)  # a power of two: padding stays under it
        size = per if len(group) > per else padded_size(len(group))
        for i in range(0, len(group), per):
            rows = [(key, True) for key in group[i : i + per]]
            out.append(rows + [(blank, False)] * (size - len(rows)))
    return out


def count_both(conn: Connection, many: list[Facts], now: datetime) -> list[tuple[int, int]]:
    """Each (unread, unseen): the unseen count is the unread count over views and marks that
    treat seen as read (`inbox.unseen_views`), counted in the same round trip."""
    folded = []
    for facts in many:
        views, marked = rules.unseen_views(facts.views, facts.marked)
        folded.append(replace(facts, views=views, marked=marked))
    counts = count_unread(conn, [*many, *folded], now)
    return list(zip(counts[: len(many)], counts[len(many) :], strict=True))


@lru_cache(maxsize=256)
def _page(muted: tuple[bool, ...]) -> Any:
    """Per window (`:s<i>`, `:lo<i>`, `:hi<i>`, muted types `:m<i>` where `muted[i]`), the
    newest `:limit` routes that can be shown, with their notification: one keyset query per
    stream on the primary key, in one statement."""
    parts = []
    for i, has_muted in enumerate(muted):
        query = (
            select(*ROUTE, routes.c.collapsed, notifications.c.doc)
            .select_from(routes.join(notifications, notifications.c.id == routes.c.notification_id))
            .where(
                routes.c.stream == bindparam(f"s{i}"),
                routes.c.seq > bindparam(f"lo{i}"),
                routes.c.seq <= bindparam(f"hi{i}"),
                routes.c.replaced.is_(False),
                or_(routes.c.expires_at.is_(None), routes.c.expires_at > NOW),
            )
            .order_by(routes.c.seq.desc())
            .limit(bindparam("limit", type_=Integer, literal_execute=True))
        )
        if has_muted:
            query = query.where(routes.c.type.not_in(bindparam(f"m{i}", expanding=True)))
        parts.append(select(query.subquery()))
    return union_all(*parts) if len(parts) > 1 else parts[0]


ROUTES_OF = select(*ROUTE).where(routes.c.notification_id == bindparam("id"))
DOCS = (
    select(notifications.c.id, notifications.c.doc, func.max(routes.c.collapsed))
    .select_from(notifications.join(routes, routes.c.notification_id == notifications.c.id))
    .where(notifications.c.id.in_(bindparam("ids", expanding=True)))
    .group_by(notifications.c.id, notifications.c.doc)
)


def _upsert_watermarks(insert: Any, columns: Sequence[str]) -> Any:
    """One user's watermark row per stream, `columns` set where the row exists: built once per
    dialect and run with one parameter set per stream (a statement built per call, with its
    rows as values, was compiled again on every read-all)."""
    stmt = insert(watermarks)
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "stream"], set_={c: stmt.excluded[c] for c in columns}
    )


# Keyed by `Database.sqlite`.
_WATERMARK_UPSERT = {
    True: _upsert_watermarks(sqlite_insert, WATERMARK_COLUMNS),
    False: _upsert_watermarks(pg_insert, WATERMARK_COLUMNS),
}
_SEEN_UPSERT = {
    True: _upsert_watermarks(sqlite_insert, ("seen_seq", "seen_at")),
    False: _upsert_watermarks(pg_insert, ("seen_seq", "seen_at")),
}

# Read-all: the marks the new read watermark makes redundant go, explicit unread marks turn read.
_REDUNDANT_MARKS = delete(marks).where(
    marks.c.user_id == bindparam("user"), marks.c.archived_at.is_(None), marks.c.seen_at.is_(None)
)
_UNREAD_MARKS_READ = (
    update(marks)
    .where(marks.c.user_id == bindparam("user"), marks.c.unread.is_(True))
    .values(unread=False, read_at=bindparam("now"))
)
_EVENT = insert(events)

MARKS: dict[str, Any] = {
    "read": lambda now: {"read_at": now, "unread": False},
    "unread": lambda now: {"read_at": None, "unread": True},
    "archived": lambda now: {"archived_at": now},
}


class Inbox:
    """Inbox reads and state changes for one user at a time. Each call runs all its statements
    in one trip to the database (`Database.run`): the store's cost per call is per statement,
    and on SQLite mostly the hand-offs to the database thread."""

    db: Database

    types: TypeCache

    async def unread_count(self, user: str) -> int:
        return (await self.counts(user))[0]

    async def counts(self, user: str) -> tuple[int, int]:
        """(unread, unseen), in one trip to the database."""
        now = utcnow()

        def count(c: Connection) -> tuple[int, int]:
            facts = load_facts(c, [(user, ())], self.types.get_in(c), now)
            return count_both(c, facts, now)[0]

        return await self.db.reading(count)

    async def list_inbox(
        self, user: str, filter: Filter, limit: int, position: PagePosition
    ) -> InboxPage:
        """A page after `position`: per stream, a keyset query below the stream's position,
        merged newest first (clarion/inbox.py)."""
        now = utcnow()

        def listed(c: Connection) -> tuple[list[tuple[Any, Any]], int, int]:
            (facts,) = load_facts(c, [(user, ())], self.types.get_in(c), now)
            return self._listed(c, facts, filter, limit, position, now)

        merged, unread, unseen = await self.db.reading(listed)
        page = merged[:limit]
        next_cursor = rules.advance(position, page).encode() if len(merged) > limit else None
        items = []
        for _, row in page:
            assert isinstance(row, Listed)
            item = orjson.loads(row.doc)
            item["read_at"] = iso(row.state.read_at)
            item["archived_at"] = iso(row.state.archived_at)
            item["seen_at"] = iso(row.seen_at)
            item["collapsed"] = row.collapsed
            items.append(item)
        return InboxPage(items, next_cursor, unread, unseen)

    def _listed(
        self,
        conn: Connection,
        facts: Facts,
        filter: Filter,
        limit: int,
        position: PagePosition,
        now: datetime,
    ) -> tuple[list[tuple[Any, Any]], int, int]:
        """The `limit + 1` rows after `position`, merged, and the unread and unseen counts."""
        marks_by_id = {m.id: m for m, _ in facts.marked}
        windows: dict[str, tuple[int, int]] = {}
        for v in facts.views.values():
            lo, hi = v.window(filter)
            below = position.below(v.stream)
            if below is not None:
                hi = min(hi, below - 1)
            if lo < hi:
                windows[v.stream] = (lo, hi)
        sources: dict[str, Source] = {}
        floor: dict[str, int] = {}  # per stream, the lowest seq read so far
        chunk = limit + 1  # a page needs at most this many of one stream, unless some are hidden
        got = self._routes(conn, facts.views, windows, chunk, now)
        for stream in windows:
            rows = got.get(stream, [])
            sources[stream] = self._accept(facts, marks_by_id, rows, filter, now, chunk)
            floor[stream] = rows[-1].seq if rows else windows[stream][0]
        extras = [
            (r, st)
            for r, st in rules.extras(facts.views, facts.marked, filter, now)
            if position.extra is None or r.id < position.extra
        ][: limit + 1]
        docs = self._docs(conn, [r.id for r, _ in extras])
        extra_rows = [
            Listed(r.id, r.seq, docs[r.id][0], st, marks_by_id[r.id].seen_at, docs[r.id][1])
            for r, st in extras
            if r.id in docs
        ]
        while True:
            merged = rules.merge(sources, extra_rows, limit + 1)
            if not isinstance(merged, str):
                break
            lo = windows[merged][0]
            window = {merged: (lo, floor[merged] - 1)}
            rows = self._routes(conn, facts.views, window, chunk, now).get(merged, [])
            extra = self._accept(facts, marks_by_id, rows, filter, now, chunk)
            sources[merged] = Source([*sources[merged].rows, *extra.rows], extra.done)
            floor[merged] = rows[-1].seq if rows else lo
        ((unread, unseen),) = count_both(conn, [facts], now)
        return merged, unread, unseen

    @staticmethod
    def _routes(
        conn: Connection,
        views: Views,
        windows: dict[str, tuple[int, int]],
        limit: int,
        now: datetime,
    ) -> dict[str, list[Any]]:
        """Per stream, the newest `limit` routes in its window that can be shown (not collapsed,
        expired or muted), with their notification: one keyset query per stream, one round trip."""
        if not windows:
            return {}
        params: dict[str, Any] = {"now": now, "limit": limit}
        for i, (stream, (lo, hi)) in enumerate(windows.items()):
            params |= {f"s{i}": stream, f"lo{i}": lo, f"hi{i}": hi}
            params[f"m{i}"] = sorted(views[stream].muted)
        shape = tuple(bool(views[stream].muted) for stream in windows)
        out: dict[str, list[Any]] = defaultdict(list)
        for row in raw.query(conn, _page(shape), params):
            out[row[0]].append(row)
        for rows in out.values():
            rows.sort(key=lambda r: r[1], reverse=True)
        return out

    @staticmethod
    def _accept(
        facts: Facts,
        marks_by_id: dict[str, Mark],
        rows: list[Any],
        filter: Filter,
        now: datetime,
        chunk: int,
    ) -> Source:
        """The rows the filter lists: shown by this route, in the filter's state."""
        accepted = []
        for row in rows:
            route = to_route(row)
            if not rules.shown(facts.views, route, now):
                continue
            mark = marks_by_id.get(route.id)
            state = rules.state(facts.views[route.stream], route.seq, mark)
            if state.fits(filter):
                seen = mark.seen_at if mark is not None else None
                accepted.append(Listed(route.id, route.seq, row[8], state, seen, row[7]))
        return Source(accepted, done=len(rows) < chunk)

    @staticmethod
    def _docs(conn: Connection, ids: list[str]) -> dict[str, tuple[bytes, int]]:
        """Notifications by id, with how many each stands for (its routes' `collapsed`)."""
        if not ids:
            return {}
        rows = raw.query(conn, DOCS, {"ids": padded(ids)})  # (padded: a few texts in all)
        return {id: (bytes(doc), int(c or 0)) for id, doc, c in rows}

    async def snapshot(self, user: str, names: list[str], unread: bool = True) -> Snapshot:
        return (await self.snapshots([(user, names, unread)]))[0]

    async def snapshots(self, wanted: list[tuple[str, list[str], bool]]) -> list[Snapshot]:
        """What connections start from, read in one transaction for all of them (the hub
        batches the handshakes waiting): the topics each user follows, every stream's head, its
        muted types and (where asked) the exact unread count as of those heads. Three
        statements in one trip to the database, whatever the number of connections."""
        now = utcnow()

        def read(c: Connection) -> tuple[list[Facts], list[tuple[int, int]]]:
            many = load_facts(c, [(u, names) for u, names, _ in wanted], self.types.get_in(c), now)
            counting = [f for f, (_, _, unread) in zip(many, wanted, strict=True) if unread]
            return many, count_both(c, counting, now)

        many, counted = await self.db.reading(read)
        counts = iter(counted)
        out = []
        for facts, (_, names, unread) in zip(many, wanted, strict=True):
            topics = sorted(s for s in facts.since if s.startswith(TOPIC_PREFIX))
            heads = {n: facts.heads.get(n, 0) for n in [*names, *topics]}
            count, unseen = next(counts) if unread else (0, 0)
            out.append(Snapshot(heads, count, topics, facts.muted, facts.since, unseen))
        return out

    async def change_state(
        self, user: str, change: Change, id: str | None, hooks: Hooks = NO_HOOKS
    ) -> StateChanged:
        """Apply a read/unread/archive change, log it on the user's stream, count unread: a
        handful of statements whatever the number of notifications it covers, in one trip.
        Its webhook events (`hooks`) are queued in the same transaction."""
        now = utcnow()
        return await self.db.transact(
            lambda c: self._change(c, self.types.get_in(c), user, change, id, now, hooks),
            snapshot=True,
        )

    def _change(
        self,
        conn: Connection,
        types: dict[str, TypeSettings],
        user: str,
        change: Change,
        id: str | None,
        now: datetime,
        hooks: Hooks = NO_HOOKS,
    ) -> StateChanged:
        (facts,) = load_facts(conn, [(user, ())], types, now)
        ids: list[str] = []
        reported: list[str] = []  # what the webhooks are told of
        if change == "seen":
            ids = self._mark_seen(conn, user, facts, [id] if id else [], now, reported)
        elif id is not None:
            found = [to_route(r) for r in raw.query(conn, ROUTES_OF, {"id": id})]
            if rules.primary(facts.views, found, now) is None:
                raise NotFound(f"notification {id} not found")
            values = MARKS[change](now)
            # The count below sees the new mark without reading the user's facts again.
            old = next((m for m, _ in facts.marked if m.id == id), Mark(id))
            mine = [r for r in found if r.stream in facts.views]
            facts.marked = [(m, r) for m, r in facts.marked if m.id != id]
            facts.marked.append((replace(old, **values), mine))
            stmt = self.db.insert(marks).values(user_id=user, notification_id=id, **values)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["user_id", "notification_id"], set_=values
                )
            )
            ids = [id]
            # A read of what was read (an archive of what was archived) changes nothing a
            # webhook cares about: it is told once per notification.
            again = (change == "read" and old.read_at is not None and not old.unread) or (
                change == "archived" and old.archived_at is not None
            )
            reported = [] if again else [id]
        else:
            self._move_watermarks(conn, user, facts, change, now)
            (facts,) = load_facts(conn, [(user, ())], types, now)
        queue_in(conn, hooks, change_events(user, change, reported), now)
        return self._logged(conn, user, change, ids, facts, now)

    def _logged(
        self,
        conn: Connection,
        user: str,
        change: Change,
        ids: list[str],
        facts: Facts,
        now: datetime,
    ) -> StateChanged:
        """The change as an event on the user's stream, with the counts after it."""
        stream = user_stream(user)
        seq = allocate_in(self.db, conn, {stream: 1})[stream]
        ((unread, unseen),) = count_both(conn, [facts], now)
        payload = state_event(stream, seq, change, ids, iso(now) or "", unread, unseen)
        row = {"stream": stream, "seq": seq, "kind": "state", "payload": payload, "created_at": now}
        conn.execute(_EVENT, row)
        return StateChanged(StoredEvent(stream, seq, payload, Meta("state")), unread, unseen)

    async def mark_seen(self, user: str, ids: list[str], hooks: Hooks = NO_HOOKS) -> StateChanged:
        """Several notifications shown at once (an inbox opened): one `seen` event; the
        webhooks are told of those seen for the first time, in the same transaction."""
        now = utcnow()

        def seen(c: Connection) -> StateChanged:
            (facts,) = load_facts(c, [(user, ())], self.types.get_in(c), now)
            fresh: list[str] = []
            done = self._mark_seen(c, user, facts, ids, now, fresh)
            queue_in(c, hooks, change_events(user, "seen", fresh), now)
            return self._logged(c, user, "seen", done, facts, now)

        return await self.db.transact(seen, snapshot=True)

    def _mark_seen(
        self,
        conn: Connection,
        user: str,
        facts: Facts,
        ids: list[str],
        now: datetime,
        fresh: list[str] | None = None,
    ) -> list[str]:
        """Set `seen_at` on the user's marks of `ids` it sees (first time only, those go to
        `fresh`); `facts` is updated so the count after sees them. Ids the user does not see
        are left out."""
        found: dict[str, list[Route]] = defaultdict(list)
        wanted = sorted(set(ids))
        if wanted:
            for r in conn.execute(select(*ROUTE).where(routes.c.notification_id.in_(wanted))).all():
                found[r[2]].append(to_route(r))
        done = []
        for nid in wanted:
            if rules.primary(facts.views, found[nid], now) is None:
                continue
            old = next((m for m, _ in facts.marked if m.id == nid), Mark(nid))
            if old.seen_at is not None:
                done.append(nid)
                continue
            mine = [r for r in found[nid] if r.stream in facts.views]
            facts.marked = [(m, r) for m, r in facts.marked if m.id != nid]
            facts.marked.append((replace(old, seen_at=now), mine))
            stmt = self.db.insert(marks).values(user_id=user, notification_id=nid, seen_at=now)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["user_id", "notification_id"], set_={"seen_at": now}
                )
            )
            done.append(nid)
            if fresh is not None:
                fresh.append(nid)
        if ids and not done:
            raise NotFound("none of these notifications was found")
        return done

    def _move_watermarks(
        self, conn: Connection, user: str, facts: Facts, change: Change, now: datetime
    ) -> None:
        """Read-all / archive-all: one watermark row per stream the user sees, up to its head;
        marks that the new read watermark makes redundant go."""
        if change == "seen_all":
            seen_rows = [
                {"user_id": user, "stream": v.stream, "seen_seq": max(v.seen, v.hi), "seen_at": now}
                for v in facts.views.values()
            ]
            conn.execute(_SEEN_UPSERT[self.db.sqlite], seen_rows)
            return
        reading = change == "read_all"
        rows = []
        for v in facts.views.values():
            read, archived = (
                (max(v.read, v.hi), v.archived) if reading else (v.read, max(v.archived, v.hi))
            )
            rows.append(
                {
                    "user_id": user,
                    "stream": v.stream,
                    "read_seq": read,
                    "archived_seq": archived,
                    "read_at": now if reading else v.read_at,
                    "archived_at": v.archived_at if reading else now,
                }
            )
        conn.execute(_WATERMARK_UPSERT[self.db.sqlite], rows)
        if reading:
            conn.execute(_REDUNDANT_MARKS, {"user": user})
            conn.execute(_UNREAD_MARKS_READ, {"user": user, "now": now})
