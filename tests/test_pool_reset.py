"""SQLite connections go back to their pool without a rollback when no transaction is open
(store/db.py `on_reset`): a publish's transaction is one hand-off to the writer's thread, not
two, and a connection returned with a transaction open is still rolled back."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiosqlite.core
import pytest
from sqlalchemy import select

from clarion.domain import Draft, utcnow
from clarion.ids import new_id
from clarion.store import SQLStore
from clarion.store.schema import notifications


@pytest.fixture
def handoffs(monkeypatch: pytest.MonkeyPatch) -> Iterator[collections.Counter[str]]:
    """What is handed to aiosqlite's threads, by the name of the function."""
    seen: collections.Counter[str] = collections.Counter()
    real = aiosqlite.core.Connection._execute

    async def counted(self: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
        seen[getattr(fn, "__name__", repr(fn))] += 1
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.core.Connection, "_execute", counted)
    yield seen


async def test_a_publish_is_one_handoff_to_the_writer(
    tmp_path: Path, handoffs: collections.Counter[str]
) -> None:
    store = SQLStore(f"sqlite:///{tmp_path / 'hops.db'}")
    await store.connect()
    try:
        draft = Draft(new_id(), "message", "normal", b"{}", utcnow(), users=["ann"])
        await store.publish([draft])  # warm: the first checkout connects
        handoffs.clear()
        for _ in range(3):
            draft = Draft(new_id(), "message", "normal", b"{}", utcnow(), users=["ann"])
            await store.publish([draft])
        assert dict(handoffs) == {"call": 3}  # store/sqlite_thread.py `transact`: no rollback
    finally:
        await store.close()


async def test_a_connection_returned_in_a_transaction_is_rolled_back(tmp_path: Path) -> None:
    """A transaction SQLAlchemy does not know of (begun on the `sqlite3` connection itself)
    is rolled back on return: the writer's next transaction begins, and nothing of the
    abandoned one was kept."""
    store = SQLStore(f"sqlite:///{tmp_path / 'open.db'}")
    await store.connect()
    try:
        async with store.db.writer.connect() as conn:
            raw = await conn.get_raw_connection()
            lite: Any = raw.driver_connection
            await lite.execute("BEGIN IMMEDIATE")
            await lite.execute("INSERT INTO streams (name, seq, routed) VALUES ('left', 1, 0)")
        draft = Draft(new_id(), "message", "normal", b"{}", utcnow(), users=["ann"])
        assert len(await store.publish([draft])) == 1  # BEGIN IMMEDIATE: none open
        async with store.db.read() as conn:
            assert (await conn.execute(select(notifications.c.id))).all() == [(draft.id,)]
            names = await conn.exec_driver_sql("SELECT name FROM streams WHERE name = 'left'")
            assert names.all() == []
    finally:
        await store.close()
