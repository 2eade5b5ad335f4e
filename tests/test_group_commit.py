"""The publish group commit on a real store (SQLite and PostgreSQL): one bad publish in a batch
fails alone, and each of its neighbours is stored once and answered once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError

from clarion.batching import Batcher
from clarion.domain import Draft, Published
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore


def draft(user: str, id: str | None = None) -> Draft:
    id = id or new_id()
    now = datetime.now(UTC)
    doc = notification_doc(id, now.isoformat(), type="message", priority="normal", title=user)
    return Draft(id=id, type="message", priority="normal", doc=doc, created_at=now, users=[user])


async def test_a_publish_the_database_refuses_fails_alone_in_its_batch(sql_store: SQLStore) -> None:
    """A draft the database refuses late (here an id already stored: the primary key) shares
    a transaction with three good ones. The batch is rolled back and written again without it:
    the bad one's caller gets the error, each good one is stored once and answered once."""
    taken = draft(f"u-{new_id()}")
    await sql_store.publish([taken])
    users = [f"u-{new_id()}" for _ in range(4)]
    batches: list[int] = []

    async def flush(drafts: list[Draft]) -> list[Published]:
        batches.append(len(drafts))
        return await sql_store.publish(drafts)

    batcher: Batcher[Draft, Published] = Batcher(flush)  # as node.py wires it
    drafts = [draft(users[0]), draft(users[1], id=taken.id), draft(users[2]), draft(users[3])]
    results = await asyncio.gather(*(batcher.submit(d) for d in drafts), return_exceptions=True)

    assert batches[0] == 4, "the four shared one transaction first"
    assert isinstance(results[1], IntegrityError)
    for i in (0, 2, 3):
        result = results[i]
        assert isinstance(result, Published), result
        assert result.id == drafts[i].id and result.recipients == 1
        stored = await sql_store.events_after(f"user:{users[i]}", 0, 10)
        assert [e.seq for e in stored] == [1], "stored once, with the first seq of its stream"
        assert [e.seq for e in result.events] == [1]
    assert await sql_store.events_after(f"user:{users[1]}", 0, 10) == []
