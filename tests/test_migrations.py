"""Upgrading a populated database: a store written by the schema before routes (0003) opens on
the current one with the same inbox, the same unread count, and counters that go on from there."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.inbox import PagePosition
from clarion.store import SQLStore, migrate
from clarion.store.db import async_url
from harness.services import postgres_database

NOW = datetime.now(UTC)
PAST = NOW - timedelta(hours=1)


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'clarion.db'}"
    else:
        with postgres_database() as url:
            yield url


def _note(kind: str, expires: datetime | None = None) -> dict[str, object]:
    nid = new_id()
    doc = notification_doc(nid, iso(NOW), type=kind, priority="normal", title=nid)
    return {"id": nid, "type": kind, "doc": doc, "expires_at": expires}


async def populate_0003(url: str) -> dict[str, str]:
    """The old layout, written as the code of schema 0003 wrote it: personal inbox rows, shared
    notification_streams rows, per-user state rows for shared notifications, collapse on
    notifications and inbox rows."""
    engine = create_async_engine(async_url(url))
    await migrate.upgrade(engine, "0003")
    notes = {
        "personal": _note("message"),
        "personal_read": _note("message"),
        "shared": _note("alert"),
        "shared_read": _note("alert"),
        "shared_archived": _note("alert"),
        "both": _note("message"),
        "collapsed": _note("alert"),
        "expired": _note("message", PAST),
        "topic_in": _note("message"),
        "topic_after": _note("message"),
    }
    ids = {k: str(v["id"]) for k, v in notes.items()}
    personal = [("personal", 1), ("personal_read", 2), ("both", 3), ("expired", 4)]
    shared = [
        ("all", "shared", 1),
        ("all", "shared_read", 2),
        ("all", "shared_archived", 3),
        ("all", "both", 4),
        ("all", "collapsed", 5),
        ("topic:x", "topic_in", 1),
        ("topic:x", "topic_after", 2),
    ]
    async with engine.begin() as conn:
        for key, note in notes.items():
            await conn.execute(
                text(
                    "INSERT INTO notifications (id, type, priority, doc, created_at, expires_at,"
                    " replaced_by, collapsed) VALUES (:id, :type, 'normal', :doc, :at, :exp,"
                    " :replaced, 0)"
                ),
                {
                    "id": note["id"],
                    "type": note["type"],
                    "doc": note["doc"],
                    "at": NOW,
                    "exp": note["expires_at"],
                    "replaced": ids["shared"] if key == "collapsed" else None,
                },
            )
        for key, seq in personal:
            await conn.execute(
                text(
                    "INSERT INTO events (stream, seq, kind, notification_id, payload, created_at)"
                    " VALUES ('user:ann', :seq, 'notification', :id, :p, :at)"
                ),
                {"seq": seq, "id": ids[key], "p": b"{}", "at": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO inbox (user_id, notification_id, personal, read_at, collapsed)"
                    " VALUES ('ann', :id, TRUE, :read, 0)"
                ),
                {"id": ids[key], "read": NOW if key == "personal_read" else None},
            )
        for stream, key, seq in shared:
            await conn.execute(
                text(
                    "INSERT INTO events (stream, seq, kind, notification_id, payload, created_at)"
                    " VALUES (:s, :seq, 'notification', :id, :p, :at)"
                ),
                {"s": stream, "seq": seq, "id": ids[key], "p": b"{}", "at": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO notification_streams (stream, seq, notification_id)"
                    " VALUES (:s, :seq, :id)"
                ),
                {"s": stream, "seq": seq, "id": ids[key]},
            )
        await conn.execute(
            text(
                "INSERT INTO inbox (user_id, notification_id, personal, read_at, archived_at,"
                " collapsed) VALUES ('ann', :r, FALSE, :at, NULL, 0),"
                " ('ann', :a, FALSE, NULL, :at, 0)"
            ),
            {"r": ids["shared_read"], "a": ids["shared_archived"], "at": NOW},
        )
        await conn.execute(
            text(
                "INSERT INTO streams (name, seq) VALUES ('user:ann', 4), ('all', 5), ('topic:x', 2)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO follows (user_id, stream, since_seq, created_at, until_seq, granted)"
                " VALUES ('ann', 'all', 0, :at, NULL, FALSE), ('ann', 'topic:x', 0, :at, 1, TRUE)"
            ),
            {"at": NOW},
        )
    await engine.dispose()
    return ids


async def check_upgraded(url: str) -> None:
    ids = await populate_0003(url)
    store = SQLStore(url)
    await store.connect()  # upgrades to the current schema
    try:
        expect_all = sorted(
            ids[k]
            for k in ("personal", "personal_read", "shared", "shared_read", "both", "topic_in")
        )[::-1]
        expect_unread = sorted(ids[k] for k in ("personal", "shared", "both", "topic_in"))[::-1]
        assert await store.unread_count("ann") == 4
        for filter, expected in (
            ("all", expect_all),
            ("unread", expect_unread),
            ("archived", [ids["shared_archived"]]),
        ):
            page = await store.list_inbox("ann", filter, 20, PagePosition())  # type: ignore[arg-type]
            assert [i["id"] for i in page.items] == expected, filter
        # The counters carry on: new notifications number after the migrated ones.
        nid = new_id()
        doc = notification_doc(nid, iso(NOW), type="alert", priority="normal", title="new")
        (done,) = await store.publish(
            [Draft(nid, "alert", "normal", doc, NOW, users=["ann"], shared=["all", "topic:x"])]
        )
        assert {e.stream: e.seq for e in done.events} == {"user:ann": 5, "all": 6, "topic:x": 3}
        assert await store.unread_count("ann") == 5
        state = await store.change_state("ann", "read_all", None)
        assert state.unread == 0
        state = await store.change_state("ann", "unread", ids["shared"])
        assert state.unread == 1
    finally:
        await store.close()


def test_a_populated_0003_database_upgrades_with_the_same_inbox(database: str) -> None:
    asyncio.run(check_upgraded(database))


async def check_0006(url: str) -> None:
    """0005 -> 0006: type settings and preferences keep their values and gain the email
    channel (on by default), watermarks a seen watermark at 0: nothing counts as seen."""
    ids = await populate_0003(url)
    engine = create_async_engine(async_url(url))
    await migrate.upgrade(engine, "0005")
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO type_settings (type, in_app, push, mandatory, digest_seconds)"
                " VALUES ('alert', TRUE, FALSE, FALSE, 60)"
            )
        )
        await conn.execute(
            text(
                "INSERT INTO preferences (user_id, type, in_app, push)"
                " VALUES ('ann', 'x', FALSE, NULL)"
            )
        )
    await engine.dispose()
    store = SQLStore(url)
    await store.connect()
    try:
        alert = (await store.type_settings())["alert"]
        assert (alert.push, alert.digest_seconds, alert.email, alert.escalate) == (
            False,
            60,
            True,
            (),
        )
        prefs, _ = await store.preferences("ann")
        assert prefs.types["x"] == (False, None) and prefs.email == {}
        unread, unseen = await store.counts("ann")
        assert unread == unseen == 4
        seen = await store.mark_seen("ann", [ids["personal"]])
        assert (seen.unread, seen.unseen) == (4, 3)
    finally:
        await store.close()


def test_a_populated_0005_database_gains_the_channels(database: str) -> None:
    asyncio.run(check_0006(database))


async def check_0009(url: str) -> None:
    """0008's presence rows (an `alive_at` each) and `online` rows (a heartbeat per user) move
    to per-node beats and intervals: who is online and `when: offline` answer as before."""
    from clarion.store.escalations import intervals

    engine = create_async_engine(async_url(url))
    await migrate.upgrade(engine, "0008")
    seen = NOW - timedelta(minutes=1)
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO presence (node, user_id, transport, connections, alive_at)"
                " VALUES ('n1', 'ann', 'websocket', 2, :now), ('n1', 'bo', 'sse', 1, :now),"
                " ('dead', 'cy', 'websocket', 1, :past)"
            ),
            {"now": NOW, "past": PAST},
        )
        await conn.execute(
            text("INSERT INTO online (user_id, since, seen_at) VALUES ('ann', :past, :seen)"),
            {"past": PAST, "seen": seen},
        )
    await engine.dispose()
    store = SQLStore(url)
    await store.connect()
    try:
        ann, _ = await store.presence.of("ann", NOW + timedelta(seconds=1), 15)
        cy, _ = await store.presence.of("cy", NOW + timedelta(seconds=1), 15)
        assert (ann, cy) == ({"websocket": 2}, {})
        async with store.db.read() as conn:
            spans = await intervals(conn, ["ann", "bo"])
        assert spans == {"ann": ((PAST, seen),)}
    finally:
        await store.close()


def test_a_populated_0008_database_moves_to_node_beats(database: str) -> None:
    asyncio.run(check_0009(database))


async def check_0010(url: str) -> None:
    """0009 -> 0010: routes that were irregular only for their expiry become regular (the
    ordinals count them), those already expired are hidden and counted by bucket, and those
    with `also` stay irregular; the unread count and pages are the same before and after
    their expiry, with and without a sweep."""
    from unittest import mock

    from sqlalchemy import bindparam, select

    from clarion.store.schema import TS, hole_buckets, routes

    typed = (bindparam("exp", type_=TS), bindparam("at", type_=TS))  # as the store writes them

    ids = await populate_0003(url)  # its "expired" personal route: irregular 1, expired
    engine = create_async_engine(async_url(url))
    await migrate.upgrade(engine, "0009")
    later = NOW + timedelta(hours=1)
    ttl = {  # topic:ttl seq -> (note, expires_at, also)
        1: (_note("message", later), later, None),
        2: (_note("message", later), later, None),
        3: (_note("message", PAST), PAST, None),
        4: (_note("message", later), later, b'{"topic:other": 1}'),
        5: (_note("message", PAST), PAST, b'{"topic:other": 2}'),
    }
    async with engine.begin() as conn:
        for seq, (note, expires, also) in ttl.items():
            await conn.execute(
                text(
                    "INSERT INTO notifications (id, type, priority, doc, created_at, expires_at)"
                    " VALUES (:id, 'message', 'normal', :doc, :at, :exp)"
                ).bindparams(*typed),
                {"id": note["id"], "doc": note["doc"], "at": NOW, "exp": expires},
            )
            await conn.execute(
                text(
                    "INSERT INTO routes (stream, seq, notification_id, type, n, tn, expires_at,"
                    " also, irregular) VALUES ('topic:ttl', :seq, :id, 'message', :seq, :seq,"
                    " :exp, :also, 1)"
                ).bindparams(typed[0]),
                {"seq": seq, "id": note["id"], "exp": expires, "also": also},
            )
        await conn.execute(
            text("INSERT INTO streams (name, seq, routed) VALUES ('topic:ttl', 5, 5)")
        )
        await conn.execute(
            text("INSERT INTO stream_types (stream, type, n) VALUES ('topic:ttl', 'message', 5)")
        )
        await conn.execute(
            text(
                "INSERT INTO follows (user_id, stream, since_seq, created_at, until_seq, granted)"
                " VALUES ('ann', 'topic:ttl', 0, :at, NULL, TRUE)"
            ),
            {"at": NOW},
        )
    await engine.dispose()
    store = SQLStore(url)
    await store.connect()
    try:
        async with store.db.read() as conn:
            kinds = dict(
                (
                    await conn.execute(
                        select(routes.c.seq, routes.c.irregular).where(
                            routes.c.stream == "topic:ttl"
                        )
                    )
                ).all()
            )
            expired = (
                await conn.execute(
                    select(routes.c.irregular).where(routes.c.notification_id == ids["expired"])
                )
            ).scalar_one()
            buckets = dict(
                (
                    await conn.execute(
                        select(hole_buckets.c.stream, hole_buckets.c.n).where(
                            hole_buckets.c.stream.in_(["topic:ttl", "user:ann"]),
                            hole_buckets.c.bucket >= 0,
                        )
                    )
                ).all()
            )
        assert kinds == {1: 0, 2: 0, 3: 2, 4: 1, 5: 2}
        assert expired == 2 and buckets == {"topic:ttl": 2, "user:ann": 1}
        live = sorted((str(ttl[s][0]["id"]) for s in (1, 2, 4)), reverse=True)
        assert await store.unread_count("ann") == 4 + 3
        page = await store.list_inbox("ann", "unread", 3, PagePosition())
        assert [i["id"] for i in page.items] == live
        with mock.patch("clarion.store.inbox.utcnow", lambda: later):
            assert await store.unread_count("ann") == 4  # expired, not swept yet
            while await store.expire(later):
                pass
            assert await store.unread_count("ann") == 4
    finally:
        await store.close()


def test_a_populated_0009_database_counts_expiring_routes_by_ordinals(database: str) -> None:
    asyncio.run(check_0010(database))


async def check_0011(url: str) -> None:
    """0010 -> 0011: each stream's fine hole buckets are summed into coarse ones (32 fine
    buckets each, `bucket` = -1 - index), per type; the fine ones stay as they were."""
    engine = create_async_engine(async_url(url))
    await migrate.upgrade(engine, "0010")
    fine = {("topic:x", b, t): b % 3 + 1 + (t == "alert") for b in range(0, 100) for t in TYPES}
    fine |= {("user:ann", 40, "message"): 5}
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO hole_buckets (stream, bucket, type, n) VALUES (:s, :b, :t, :n)"),
            [{"s": s, "b": b, "t": t, "n": n} for (s, b, t), n in fine.items()],
        )
    await migrate.upgrade(engine, "0011")
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT stream, bucket, type, n FROM hole_buckets"))).all()
    got = {(s, b, t): n for s, b, t, n in rows}
    want = dict(fine)
    for (s, b, t), n in fine.items():
        key = (s, -1 - b // 32, t)
        want[key] = want.get(key, 0) + n
    assert got == want
    assert got[("topic:x", -4, "alert")] == sum(b % 3 + 2 for b in range(96, 100))

    # 0011 -> 0012: each bucket's counts, fine and coarse, summed over the types.
    await migrate.upgrade(engine)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT stream, bucket, n FROM hole_totals"))).all()
    await engine.dispose()
    totals: dict[tuple[str, int], int] = {}
    for (s, b, _), n in want.items():
        totals[(s, b)] = totals.get((s, b), 0) + n
    assert {(s, b): n for s, b, n in rows} == totals
    assert totals[("topic:x", 7)] == 2 * (7 % 3 + 1) + 1


TYPES = ("message", "alert")


def test_a_populated_0010_database_gains_coarse_hole_buckets_then_totals(database: str) -> None:
    asyncio.run(check_0011(database))
