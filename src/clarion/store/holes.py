"""Hidden routes, counted by bucket: what keeps an unread count from reading them one by one.

A route that nobody can see any more (collapsed into a newer notification, or expired and
swept) is *hidden*: `irregular = 2`. How many hidden routes of unmuted types lie in a seq range
is the sum of `hole_buckets` rows for the buckets wholly inside the range, plus the hidden
routes of the two partial buckets at its ends, read through a partial index. Buckets come in
two sizes, per stream and type: fine ones of 1,024 seqs (`bucket` >= 0) and coarse ones of 32
fine buckets, 32,768 seqs (`bucket` = -1 - index, in the same table). A range sums coarse
buckets where whole ones fit and fine ones at its two ends: at most 62 fine rows and one row
per 32,768 seqs (per type), where fine buckets alone were one row per 1,024 seqs (2,649 rows,
0.8 ms of SQLite, for a window over `all` at a million notifications).

`hole_totals` holds the same counts for all types together, one row a bucket: a count for a
user who mutes no type (most of them) sums those, where the per-type rows were six times as
many to read for a stream of six types (a window over `all` at a million notifications: 95 us
of SQLite per count, 17 us on the totals). Both tables change in the same statements' transaction.

An expiring route stays regular until it expires. Between its expiry and the expiry sweep
(store/retention.py, every few seconds) that hides it, a count reads it through
`ix_routes_expiring` (`expired`): per stream, only what expired since the sweep's last pass.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import (
    BigInteger,
    and_,
    bindparam,
    cast,
    delete,
    func,
    literal_column,
    or_,
    select,
    tuple_,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.db import Database
from clarion.store.schema import hole_buckets, hole_totals, routes

BUCKET_BITS = 10
COARSE_BITS = 5  # fine buckets per coarse bucket: 2 ** COARSE_BITS
REGULAR = 0  # counted by ordinals alone (an expiring one until it expires: `expired`)
IRREGULAR = 1  # routes.irregular: 0 regular, 1 looked at one by one (ix_routes_irregular)
HIDDEN = 2  # 2 hidden, counted here (ix_routes_hidden)


def irregular_is(kind: int) -> Any:
    """`routes.irregular = <kind>` with the constant written into the SQL, not bound: the
    partial indexes `ix_routes_irregular`/`ix_routes_hidden` serve a query only where the
    planner can prove their predicate, and `irregular = $1` proves nothing in PostgreSQL's
    generic plan (which a prepared statement gets after 5 runs, once statistics say it costs
    no more): the query then walks the stream's whole seq range on another index
    (docs/architecture.md, "plans that cannot flip")."""
    return routes.c.irregular == literal_column(str(int(kind)))


def expired(stream: Any, lo: Any, hi: Any, now: Any) -> Any:
    """The WHERE clause of the regular routes of `stream` with lo < seq <= hi that expired by
    `now` and are not hidden yet: read on `ix_routes_expiring` by (stream, expires_at <= now),
    so a count reads what expired since the last sweep, never the live expiring routes. Its
    predicate is written as constants, as `irregular_is` says why. The seq range is written
    on `seq + 0`, which no index serves: with it on `seq`, PostgreSQL's generic plan (once
    `ANALYZE` has run on a large store) walked the window on the primary key instead, 275,000
    rows and 115 ms for a window over `all` at a million notifications (docs/architecture.md)."""
    seq = routes.c.seq + literal_column("0")
    return and_(
        routes.c.stream == stream,
        routes.c.expires_at.is_not(None),
        irregular_is(REGULAR),
        routes.c.expires_at <= now,
        seq > lo,
        seq <= hi,
    )


def bucket(seq: int) -> int:
    return seq >> BUCKET_BITS


def coarse(fine: int) -> int:
    """The `hole_buckets.bucket` of the coarse bucket holding fine bucket `fine`."""
    return -1 - (fine >> COARSE_BITS)


async def hide(db: Database, conn: AsyncConnection, found: Iterable[tuple[str, int, str]]) -> None:
    """Hide these routes (stream, seq, type) that are not hidden yet, and count them: only
    those this statement hid, so two nodes sweeping the same expired routes at once (on
    PostgreSQL the second waits for the first's row locks, then finds them hidden) count each
    once."""
    at = [(s, q) for s, q, _ in found]
    if not at:
        return
    hidden = await conn.execute(
        update(routes)
        .where(tuple_(routes.c.stream, routes.c.seq).in_(at), routes.c.irregular != HIDDEN)
        .values(irregular=HIDDEN, collapse_key=None)
        .returning(routes.c.stream, routes.c.seq, routes.c.type)
    )
    await count(db, conn, [(s, q, t) for s, q, t in hidden.all()])


async def count(db: Database, conn: AsyncConnection, found: Iterable[tuple[str, int, str]]) -> None:
    """Add routes written hidden to their buckets, fine and coarse."""
    per = Counter((s, bucket(q), t) for s, q, t in found)
    per += Counter({(s, coarse(b), t): n for (s, b, t), n in per.items()})
    if not per:
        return
    stmt = db.insert(hole_buckets).values(
        [{"stream": s, "bucket": b, "type": t, "n": n} for (s, b, t), n in sorted(per.items())]
    )
    await conn.execute(
        stmt.on_conflict_do_update(
            index_elements=["stream", "bucket", "type"],
            set_={"n": hole_buckets.c.n + stmt.excluded.n},
        )
    )
    totals = Counter[tuple[str, int]]()
    for (s, b, _), n in per.items():
        totals[(s, b)] += n
    both = db.insert(hole_totals).values(
        [{"stream": s, "bucket": b, "n": n} for (s, b), n in sorted(totals.items())]
    )
    await conn.execute(
        both.on_conflict_do_update(
            index_elements=["stream", "bucket"], set_={"n": hole_totals.c.n + both.excluded.n}
        )
    )


async def forget_below(conn: AsyncConnection, tops: list[tuple[str, int]]) -> None:
    """Retention removed each stream's routes up to `top`: drop the buckets wholly below, fine
    (0 <= bucket < :b) and coarse (:c < bucket < 0). A coarse bucket that retention cut keeps
    the count of what it removed, and is never summed: a count's range starts at the oldest
    route kept, so it sums only coarse buckets wholly above that."""
    if tops:
        b: Any = bindparam("b")
        c: Any = bindparam("c")
        bounds = [{"s": s, "b": bucket(top + 1), "c": coarse(bucket(top + 1))} for s, top in tops]
        for table in (hole_buckets, hole_totals):
            await conn.execute(
                delete(table).where(
                    table.c.stream == bindparam("s"),
                    or_(
                        and_(table.c.bucket >= 0, table.c.bucket < b),
                        and_(table.c.bucket > c, table.c.bucket < 0),
                    ),
                ),
                bounds,
            )


def hidden_params(prefix: str, lo: int, hi: int) -> tuple[bool, dict[str, int]]:
    """Whether lo < seq <= hi spans more than one bucket, and the bound parameters of
    `hidden_in(prefix, ...)` for that range: the partial fine buckets at its ends are scanned
    (`a`..`e`, `st`..`b`), the whole ones between (bf < bucket < bl) summed as fine buckets
    bf < bucket < x1 and x2 < bucket < bl around the coarse buckets cl <= bucket <= ch that
    lie wholly inside (none: cl > ch, and x1 = bl)."""
    first, last = bucket(lo + 1), bucket(hi)
    if first == last:
        return False, {f"{prefix}a": lo, f"{prefix}b": hi}
    top = 1 << COARSE_BITS
    whole_from = -(-(first + 1) // top)  # the first coarse bucket wholly after `first`
    whole_to = (last >> COARSE_BITS) - 1  # the last wholly before `last`
    if whole_from <= whole_to:
        x1, x2 = whole_from * top, (whole_to + 1) * top - 1
        cl, ch = -1 - whole_to, -1 - whole_from
    else:
        x1, x2, cl, ch = last, last, 0, -1
    return True, {
        f"{prefix}a": lo,
        f"{prefix}e": ((first + 1) << BUCKET_BITS) - 1,  # the first bucket's last seq
        f"{prefix}bf": first,
        f"{prefix}x1": x1,
        f"{prefix}cl": cl,
        f"{prefix}ch": ch,
        f"{prefix}x2": x2,
        f"{prefix}bl": last,
        f"{prefix}st": (last << BUCKET_BITS) - 1,  # just before the last bucket
        f"{prefix}b": hi,
    }


def hidden_in(prefix: str, stream: Any, split: bool, muted: bool) -> Any:
    """A scalar SQL expression over bound parameters (`hidden_params`; `:<prefix>mu`, the
    muted types, where `muted`): the hidden routes of unmuted types in the range."""

    def p(name: str) -> Any:
        return bindparam(prefix + name)

    def scan(a: Any, b: Any) -> Any:
        query = select(func.count()).where(
            routes.c.stream == stream,
            irregular_is(HIDDEN),
            routes.c.seq > a,
            routes.c.seq <= b,
        )
        if muted:
            query = query.where(routes.c.type.not_in(bindparam(prefix + "mu", expanding=True)))
        return query.scalar_subquery()

    if not split:
        return scan(p("a"), p("b"))

    # Unmuted: all types together, one row a bucket; else the per-type rows of unmuted types.
    table = hole_buckets if muted else hole_totals

    def whole(*where: Any) -> Any:
        total = cast(func.sum(table.c.n), BigInteger)  # PostgreSQL's sum is numeric
        query = select(func.coalesce(total, 0)).where(table.c.stream == stream, *where)
        if muted:
            query = query.where(
                hole_buckets.c.type.not_in(bindparam(prefix + "mu", expanding=True))
            )
        return query.scalar_subquery()

    b = table.c.bucket
    return (
        scan(p("a"), p("e"))
        + whole(b > p("bf"), b < p("x1"))
        + whole(b >= p("cl"), b <= p("ch"))
        + whole(b > p("x2"), b < p("bl"))
        + scan(p("st"), p("b"))
    )
