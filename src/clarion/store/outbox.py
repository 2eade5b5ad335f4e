"""How every outbox (push, email, webhooks; and the schedule) takes its due rows: a cheap
probe on a reader first (most of the time nothing is due, and the writer is left alone), then
a lease on the writer, so a second sender, on this node or another, skips what one is
sending."""

from __future__ import annotations

from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Table, bindparam, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.db import Database


@lru_cache(maxsize=16)
def _due_probe(table: Table) -> Any:
    """Built once per table: the pollers ask every second or so on every node, and building
    the statement cost more CPU than the index probe."""
    due_at = table.c.due_at
    return select(due_at).where(due_at <= bindparam("now")).order_by(due_at).limit(1)


async def any_due(db: Database, table: Table, now: datetime) -> bool:
    """Whether a row is due; ordered by `due_at` so the due index answers it (without the
    ORDER BY, PostgreSQL with stale statistics scanned the table). One trip, on a held reader
    on SQLite (`db.reading`): an idle node polls its outboxes and schedule several times a
    second."""
    probe = _due_probe(table)
    found = await db.reading(lambda c: c.execute(probe, {"now": now}).first(), one_snapshot=False)
    return found is not None


async def lease_due(
    db: Database,
    conn: AsyncConnection,
    table: Table,
    key: list[Column[Any]],
    now: datetime,
    limit: int,
    seconds: float,
) -> Any | None:
    """Lease up to `limit` due rows, oldest due first, for `seconds`, counting an attempt;
    returns the condition that picks them (for the caller's read of their details), or None."""
    query = select(*key).where(table.c.due_at <= now).order_by(table.c.due_at).limit(limit)
    if not db.sqlite:
        query = query.with_for_update(skip_locked=True)
    keys = [tuple(r) for r in (await conn.execute(query)).all()]
    if not keys:
        return None
    mine = tuple_(*key).in_(keys)
    await conn.execute(
        update(table)
        .where(mine)
        .values(due_at=now + timedelta(seconds=seconds), attempts=table.c.attempts + 1)
    )
    return mine
