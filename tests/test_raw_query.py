"""The inbox's reads go to the driver without SQLAlchemy binding their parameters (`raw.query`,
store/raw.py), on SQLite and on PostgreSQL: every statement the counts, snapshots and pages
run returns the rows SQLAlchemy returns for the same parameters, values as SQLAlchemy gives
them (datetimes, booleans), and rows keep their column names."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Integer, bindparam, select

from clarion.domain import Draft, utcnow
from clarion.events import notification_doc
from clarion.inbox import PagePosition
from clarion.store import SQLStore, raw
from clarion.store.schema import routes

T0 = datetime(2026, 11, 30, 12, 0, 0, tzinfo=UTC)


class Checked:
    """`raw.query` that also runs each statement through SQLAlchemy and compares the rows."""

    def __init__(self) -> None:
        self.real = raw.query
        self.texts: set[str] = set()
        self.calls = 0

    def __call__(
        self, conn: Connection, stmt: Any, values: Mapping[str, Any]
    ) -> Sequence[Sequence[Any]]:
        got: Sequence[Sequence[Any]] = self.real(conn, stmt, values)
        want = conn.execute(stmt, dict(values)).all()
        assert [tuple(r) for r in got] == [tuple(r) for r in want]
        for mine, theirs in zip(got, want, strict=True):  # the columns' names, as read by name
            assert mine._fields == theirs._fields  # type: ignore[attr-defined]
        self.calls += 1
        return got


async def history(store: SQLStore, now: datetime, ann: str) -> list[str]:
    """Personal and broadcast notifications to `ann`: collapsed, expired, muted, read, archived."""
    await store.follow([ann], "topic:t", grant=True)
    ids = []
    for i in range(40):
        expires = now - timedelta(hours=1) if i % 7 == 3 else None
        nid = f"01{ann[-1].upper()}{i:023d}"
        kind = "m" if i % 3 else "promo"
        doc = notification_doc(nid, T0.isoformat(), type=kind, priority="normal", title="t")
        draft = Draft(
            id=nid,
            type=kind,
            priority="normal",
            doc=doc,
            created_at=T0 + timedelta(seconds=i),
            expires_at=expires,
            collapse_key="k" if i % 5 == 0 else None,
            users=[ann] if i % 2 else [],
            shared=["all"] if i % 4 == 0 else (["topic:t"] if i % 2 == 0 else []),
        )
        await store.publish([draft])
        ids.append(nid)
    await store.put_preferences(ann, {"promo": (False, None)}, None)
    await store.change_state(ann, "read", ids[7])
    await store.change_state(ann, "archived", ids[9])
    await store.change_state(ann, "unread", ids[11])
    return ids


async def test_counts_snapshots_and_pages_read_what_sqlalchemy_reads(
    sql_store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, then on PostgreSQL (conftest's `sql_store`: a database of this module's own)."""
    store = sql_store
    checked = Checked()
    monkeypatch.setattr(raw, "query", checked)
    ids = await history(store, utcnow(), "ann")
    unread, unseen = await store.counts("ann")
    assert unread > 0 and unseen > 0
    for filter in ("all", "unread", "archived"):
        position = PagePosition.decode(None)
        pages = 0
        while True:
            page = await store.list_inbox("ann", filter, 3, position)
            pages += 1
            if page.next_cursor is None:
                break
            position = PagePosition.decode(page.next_cursor)
        assert pages > 1 or filter == "archived"
    await store.snapshots([("ann", ["all"], True), ("bob", [], True)])
    await store.change_state("ann", "read_all", None)
    assert (await store.counts("ann"))[0] == 0
    await store.change_state("ann", "unread", ids[1])
    assert (await store.counts("ann"))[0] == 1
    assert checked.calls > 20


async def test_parameters_lists_and_literals(sql_store: SQLStore) -> None:
    """A list at each size, a datetime, a constant of the statement, a literal `LIMIT`: each
    rendered as SQLAlchemy renders it, a text per list size and per literal value."""
    store = sql_store
    await history(store, T0 + timedelta(days=1), "anb")
    stmt = (
        select(routes.c.stream, routes.c.seq, routes.c.expires_at, routes.c.replaced)
        .where(
            routes.c.stream.in_(bindparam("streams", expanding=True)),
            routes.c.seq + 0 > bindparam("lo"),
            (routes.c.expires_at.is_(None)) | (routes.c.expires_at > bindparam("now")),
        )
        .order_by(routes.c.stream, routes.c.seq)
        .limit(bindparam("limit", type_=Integer, literal_execute=True))
    )
    seen: list[str] = []
    raw.WATCHERS.append(seen.append)
    try:
        async with store.db.read() as conn:

            def both(c: Connection) -> None:
                for streams, lo, limit in (
                    (["user:anb"], 0, 5),
                    (["user:anb", "all"], 2, 5),
                    (["user:anb", "all", "topic:t"], 1, 50),
                    (["user:anb", "all"], 3, 50),
                ):
                    values = {"streams": streams, "lo": lo, "now": T0, "limit": limit}
                    got = raw.query(c, stmt, values)
                    want = c.execute(stmt, values).all()
                    assert got == [tuple(r) for r in want] and got
                    assert isinstance(got[0].expires_at, datetime | None)
                    assert isinstance(got[0].replaced, bool)

            await store.db.run(conn, both)
    finally:
        raw.WATCHERS.remove(seen.append)
    assert len(seen) == 4 and len(set(seen)) == 4  # sizes 1, 2, 3 and two limits
    assert "LIMIT 5" in seen[0] and "LIMIT 50" in seen[2]
