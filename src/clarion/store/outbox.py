"""How every outbox (push, email) takes its due rows: a cheap probe on a reader first (most
of the time nothing is due, and the writer is left alone), then a lease on the writer, so a
second sender, on this node or another, skips what one is sending."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, Table, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.store.db import Database


async def any_due(db: Database, table: Table, now: datetime) -> bool:
    """Whether a row is due; ordered by `due_at` so the due index answers it (without the
    ORDER BY, PostgreSQL with stale statistics scanned the table)."""
    probe = select(table.c.due_at).where(table.c.due_at <= now).order_by(table.c.due_at)
    async with db.read() as conn:
        return (await conn.execute(probe.limit(1))).first() is not None


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
