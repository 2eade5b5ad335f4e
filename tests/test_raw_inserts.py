"""A publish's inserts on SQLite go to `sqlite3`'s executemany without SQLAlchemy binding each
row (store/raw.py): the rows stored are the ones SQLAlchemy's insert stores, value and storage
class, and the database's refusals still arrive as SQLAlchemy's errors. Its in-app choices are
read the same way: the rows SQLAlchemy reads, values as SQLAlchemy gives them."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, Table, event, insert, select
from sqlalchemy.exc import IntegrityError

from clarion.domain import Draft, utcnow
from clarion.ids import new_id
from clarion.store import SQLStore, raw
from clarion.store.fatigue import CHOICES
from clarion.store.schema import (
    escalations,
    events,
    idempotency,
    notifications,
    preferences,
    routes,
)

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)  # whole seconds: no microseconds to print
T1 = datetime(2026, 12, 1, 23, 59, 59, 123456, tzinfo=UTC)


def notification_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"n{i}",
            "type": "message",
            "priority": "high" if i % 2 else "normal",
            "collapse_key": "thread-1" if i % 3 == 0 else None,
            "doc": b'{"title":"\xc3\xa9"}' if i else b"",
            "created_at": T1 if i % 2 else T0,
            "expires_at": T1 + timedelta(days=1) if i % 3 == 1 else None,
            "publisher": "k1" if i % 2 else None,
        }
        for i in range(6)
    ]


def event_rows() -> list[dict[str, Any]]:
    return [
        {
            "stream": f"user:u{i % 2}",
            "seq": i + 1,
            "kind": "notification",
            "notification_id": f"n{i}" if i % 4 else None,
            "payload": b'{"seq":%d}' % (i + 1),
            "created_at": T0 if i % 2 else T1,
            "expires_at": None if i % 3 else T1,
        }
        for i in range(6)
    ]


def route_rows() -> list[dict[str, Any]]:
    return [
        {
            "stream": "all" if i % 2 else f"user:u{i}",
            "seq": 2**40 + i,  # beyond 32 bits: a BigInteger
            "notification_id": f"n{i}",
            "type": "message",
            "n": i + 1,
            "tn": i if i % 2 else None,
            "expires_at": T1 if i % 3 == 0 else None,
            "replaced": i % 2 == 0,
            "also": b'{"user:u1":3}' if i % 3 == 2 else None,
            "collapsed": i,
            "irregular": i % 3,
            "collapse_key": None if i % 2 else "k",
        }
        for i in range(6)
    ]


def idempotency_rows() -> list[dict[str, Any]]:
    return [
        {"key": f"k1:{i}", "notification_id": f"n{i}", "result": b"{}", "created_at": T1}
        for i in range(3)
    ]


def escalation_rows() -> list[dict[str, Any]]:
    return [
        {
            "notification_id": f"n{i}",
            "rule": i,
            "channel": "email",
            "unless": "read" if i % 2 else "seen",
            "offline": i % 2 == 1,
            "due_at": T1 + timedelta(minutes=i),
            "created_at": T0,
        }
        for i in range(4)
    ]


CASES = {
    "notifications": (notifications, notification_rows),
    "events": (events, event_rows),
    "routes": (routes, route_rows),
    "idempotency": (idempotency, idempotency_rows),
    "escalations": (escalations, escalation_rows),
}


def stored(path: Path, table: Table) -> list[tuple[Any, ...]]:
    """Every row of `table` as `sqlite3` reads it, each value beside its storage class."""
    cols = ", ".join(f"{c.name}, typeof({c.name})" for c in table.c)
    with sqlite3.connect(path) as lite:
        return lite.execute(f"SELECT {cols} FROM {table.name} ORDER BY rowid").fetchall()


async def written(path: Path, table: Table, rows: list[dict[str, Any]], *, direct: bool) -> None:
    store = SQLStore(f"sqlite:///{path}")
    await store.connect()
    try:
        if direct:
            await store.db.transact(lambda sync: raw.insert_rows(sync, table, rows))
        else:
            async with store.db.write() as conn:
                await conn.execute(insert(table), rows)
    finally:
        await store.close()


@pytest.mark.parametrize("name", list(CASES), ids=list(CASES))
async def test_raw_inserts_store_what_sqlalchemy_stores(tmp_path: Path, name: str) -> None:
    table, rows = CASES[name]
    await written(tmp_path / "sa.db", table, rows(), direct=False)
    await written(tmp_path / "raw.db", table, rows(), direct=True)
    expected = stored(tmp_path / "sa.db", table)
    assert len(expected) == len(rows())
    assert stored(tmp_path / "raw.db", table) == expected


async def test_a_refused_raw_insert_is_sqlalchemys_integrity_error(tmp_path: Path) -> None:
    """The group commit redoes a batch one by one on `IntegrityError` (batching.py), and the
    transaction is rolled back whole."""
    rows = notification_rows()
    store = SQLStore(f"sqlite:///{tmp_path / 'dup.db'}")
    await store.connect()
    try:
        with pytest.raises(IntegrityError):
            await store.db.transact(lambda sync: raw.insert_rows(sync, notifications, rows + rows))
        async with store.db.read() as conn:
            assert (await conn.execute(select(notifications.c.id))).all() == []
    finally:
        await store.close()


def draft(users: list[str], **extra: Any) -> Draft:
    return Draft(new_id(), "message", "normal", b'{"title":"x"}', utcnow(), users=users, **extra)


async def test_a_publish_on_sqlite_binds_no_row_through_sqlalchemy(tmp_path: Path) -> None:
    """The publish transaction's inserts and its in-app choices skip SQLAlchemy's statement
    execution (no cursor event: store/raw.py), and its rows are all there."""
    store = SQLStore(f"sqlite:///{tmp_path / 'pub.db'}")
    await store.connect()
    seen: list[str] = []

    def record(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    try:
        batch = [draft([f"u{i}", f"u{i + 1}"], idempotency_key=f"k:{i}") for i in range(4)]
        event.listen(Engine, "before_cursor_execute", record)
        try:
            await store.publish(batch)
        finally:
            event.remove(Engine, "before_cursor_execute", record)
        inserts = [s for s in seen if s.startswith("INSERT INTO")]
        assert not [s for s in inserts if s.split()[2] in CASES], inserts
        assert not [s for s in seen if "FROM preferences" in s], seen
        async with store.db.read() as conn:
            ids = {r for (r,) in await conn.execute(select(notifications.c.id))}
            counts = [
                len((await conn.execute(select(t.c[c]))).all())
                for t, c in ((routes, "seq"), (events, "seq"), (idempotency, "key"))
            ]
        assert ids == {d.id for d in batch}
        assert counts == [8, 8, 4]  # two users each
    finally:
        await store.close()


SHAPES = {  # (types, users) asked for
    "one-each": (["promo"], ["u0"]),
    "padded": (["news", "promo", "zz-none"], [f"u{i}" for i in range(5)]),
    "unknown-only": (["nothing"], ["nobody"]),
    "over-a-chunk": (["news", "promo"], [f"u{i}" for i in range(600)]),  # SQLAlchemy's path
}


@pytest.mark.parametrize("name", list(SHAPES), ids=list(SHAPES))
async def test_raw_choices_read_what_sqlalchemy_reads(tmp_path: Path, name: str) -> None:
    types, users = SHAPES[name]
    store = SQLStore(f"sqlite:///{tmp_path / 'prefs.db'}")
    await store.connect()
    try:
        rows = [
            {"user_id": f"u{i}", "type": t, "in_app": [True, False, None][(i + j) % 3]}
            for i in range(8)
            for j, t in enumerate(("news", "promo"))
        ]
        async with store.db.write() as conn:
            await conn.execute(insert(preferences), rows)
        lists = {"types": types, "users": users}
        direct = await store.db.transact(lambda sync: raw.select_in(sync, CHOICES, lists))
        async with store.db.read() as conn:
            expected = (await conn.execute(CHOICES, lists)).all()
        assert sorted(direct) == sorted(tuple(r) for r in expected)
        assert all(type(a) is bool for _, _, a in direct)
        if name == "padded":
            assert len(direct) == 7  # u0-u4 x news/promo, less the three with no choice
    finally:
        await store.close()
