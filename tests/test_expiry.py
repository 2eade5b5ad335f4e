"""Expiring notifications are counted without being read one by one (issue #10).

A route that carries an expiry is regular until it expires: the ordinals count it like any
other. From its expiry until the sweep hides it, a count reads it (through
`ix_routes_expiring`, by expires_at): the routes a count looks at one by one are thus what
expired since the last sweep, whatever the number of live expiring routes in the window.
Observed where the inbox rules get them (`clarion.inbox.unread_count`'s `irregular`), with
the store's clock stepped, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from sqlalchemy import func, select

from clarion import inbox as rules
from clarion.config import Settings
from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.node import Node
from clarion.store import SQLStore, holes
from clarion.store.schema import hole_buckets, routes

T0 = datetime.now(UTC).replace(microsecond=0)
TTL = timedelta(hours=1)


def _draft(topic: str, at: datetime, expires: datetime | None) -> Draft:
    nid = new_id()
    doc = notification_doc(
        nid, iso(at), type="message", priority="normal", title=nid, expires_at=iso(expires)
    )
    return Draft(nid, "message", "normal", doc, at, expires_at=expires, shared=[topic])


class Looked:
    """The routes each unread count looked at one by one, at a clock the test moves."""

    def __init__(self) -> None:
        self.now = T0
        self.per_count: list[int] = []

    @contextmanager
    def watching(self) -> Iterator[Looked]:
        real = rules.unread_count

        def counted(views: Any, counted: Any, irregular: Iterable[Any], *rest: Any) -> int:
            routes = list(irregular)
            self.per_count.append(len(routes))
            return real(views, counted, routes, *rest)

        with (
            mock.patch.object(rules, "unread_count", counted),
            mock.patch("clarion.store.inbox.utcnow", lambda: self.now),
        ):
            yield self

    async def count(self, store: SQLStore, user: str) -> tuple[int, int]:
        """(unread, routes looked at one by one for it)."""
        self.per_count.clear()
        unread = await store.unread_count(user)
        return unread, self.per_count[0]  # [unread, unseen]: the same windows


async def _hidden(store: SQLStore, topic: str) -> int:
    async with store.db.read() as conn:
        total = select(func.coalesce(func.sum(hole_buckets.c.n), 0))
        fine = total.where(hole_buckets.c.stream == topic, hole_buckets.c.bucket >= 0)
        return int((await conn.execute(fine)).scalar_one())


@pytest.mark.parametrize("n", [10, 300], ids=["10-expiring", "300-expiring"])
async def test_a_count_reads_only_what_expired_since_the_sweep(sql_store: SQLStore, n: int) -> None:
    tag = secrets.token_hex(4)
    user, topic = f"ttl-{tag}", f"topic:ttl-{tag}"
    await sql_store.follow([user], topic, grant=True)
    await sql_store.publish([_draft(topic, T0, T0 + TTL) for _ in range(n)])
    await sql_store.publish([_draft(topic, T0, None)])
    with Looked().watching() as looked:
        # Live expiring routes count like any other: none is read one by one.
        assert await looked.count(sql_store, user) == (n + 1, 0)
        # Expired, not swept yet: the count is exact, reading only those (the sweep's backlog).
        looked.now = T0 + 2 * TTL
        assert await looked.count(sql_store, user) == (1, n)
        # The sweep hides them (counted by bucket): nothing is read one by one again.
        while await sql_store.expire(looked.now):
            pass
        assert await _hidden(sql_store, topic) == n
        assert await looked.count(sql_store, user) == (1, 0)
        await sql_store.publish([_draft(topic, looked.now, looked.now + TTL)])
        assert await looked.count(sql_store, user) == (2, 0)


async def test_the_sweep_takes_no_write_when_nothing_expired(sql_store: SQLStore) -> None:
    tag = secrets.token_hex(4)
    topic = f"topic:ttl-{tag}"
    await sql_store.publish([_draft(topic, T0, T0 + 100 * TTL)])
    while await sql_store.expire(T0 + 2 * TTL):  # whatever earlier tests left expired
        pass
    with mock.patch.object(sql_store.db, "write", side_effect=AssertionError("a write")):
        assert await sql_store.expire(T0 + 2 * TTL) == 0


async def test_the_node_sweeps_every_expired_notification_in_batches(tmp_path: Path) -> None:
    """`Node.expire` (the loop's run-once entry) goes on batch after batch (500 a
    transaction) until nothing expired is left; retention's own pass finds nothing more."""
    node = Node(Settings(database_url=f"sqlite:///{tmp_path / 'c.db'}", jwt_secret="x" * 40))
    await node.start()
    try:
        topic = "topic:ttl"
        await node.store.follow(["ann"], topic, grant=True)
        for _ in range(3):
            await node.store.publish([_draft(topic, T0, T0 + TTL) for _ in range(400)])
        await node.store.publish([_draft(topic, T0, None)])
        assert await node.expire(T0 + TTL / 2) == 0
        assert await node.expire(T0 + 2 * TTL) == 1200
        assert await _hidden(node.store, topic) == 1200  # type: ignore[arg-type]
        assert await node.store.purge(None, T0 + 2 * TTL) == 0
        with mock.patch("clarion.store.inbox.utcnow", lambda: T0 + 2 * TTL):
            assert await node.store.unread_count("ann") == 1
    finally:
        await node.stop()


async def test_routes_hidden_twice_are_counted_once(sql_store: SQLStore) -> None:
    """Two sweeps (two nodes, every few seconds) may read the same expired routes before
    either hides them: the second hides nothing more and counts nothing more (on PostgreSQL it
    waits for the first's row locks and then finds them hidden; here, one after the other)."""
    tag = secrets.token_hex(4)
    user, topic = f"ttl-{tag}", f"topic:ttl-{tag}"
    await sql_store.follow([user], topic, grant=True)
    await sql_store.publish([_draft(topic, T0, T0 + TTL) for _ in range(5)])
    await sql_store.publish([_draft(topic, T0, None)])
    async with sql_store.db.read() as conn:
        query = select(routes.c.stream, routes.c.seq, routes.c.type)
        found = [tuple(r) for r in (await conn.execute(query.where(routes.c.stream == topic)))]
    expired = found[:5]
    for _ in range(2):
        async with sql_store.db.write() as conn:
            await holes.hide(sql_store.db, conn, expired)  # type: ignore[arg-type]
    assert await _hidden(sql_store, topic) == 5
    with Looked().watching() as looked:
        looked.now = T0 + 2 * TTL
        assert await looked.count(sql_store, user) == (1, 0)
