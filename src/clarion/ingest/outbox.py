"""A transactional outbox in the application's own PostgreSQL database (asyncpg).

The app inserts the publish body into `clarion_outbox` inside its own transaction, so the
notification exists if and only if the app's change committed. Clarion claims the oldest rows
with `FOR UPDATE SKIP LOCKED` in a transaction it keeps open while it publishes them, and deletes
them in that transaction once its own store committed: a crash in between releases the row
locks and another claim (on any node) redelivers them, deduplicated by the row id. Several nodes
share a table: each skips the rows another holds. A row that can never be published stays in
the table with its `error` set (the dead letter). An `AFTER INSERT` trigger's `NOTIFY` (sent at
the app's commit, not before) wakes the consumer at once; it also polls, in case a
notification was missed (a reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import orjson

from clarion.ingest.base import Message, Outcome, source_id

TABLE = "clarion_outbox"
NAME = re.compile(r"^[a-z_][a-z0-9_]{0,50}(\.[a-z_][a-z0-9_]{0,50})?$")


def table_name(name: str) -> str:
    """A table name fit to be written into SQL: lower-case identifiers, maybe schema-qualified."""
    if not NAME.match(name):
        raise ValueError(f"outbox table {name!r}: use lower-case letters, digits, _ (schema.table)")
    return name


def ddl(table: str = TABLE) -> str:
    """The outbox's DDL, for the app's own migrations (`clarion outbox ddl`)."""
    table = table_name(table)
    base = table.rsplit(".", 1)[-1]
    return f"""\
-- Clarion's outbox: the app inserts publish bodies in its own transaction;
--   INSERT INTO {table} (payload) VALUES ('{{"users": ["alice"], "title": "Hi"}}');
-- Clarion publishes and deletes them; a row it cannot publish keeps its `error`.
CREATE TABLE IF NOT EXISTS {table} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    error jsonb
);
CREATE INDEX IF NOT EXISTS {base}_waiting ON {table} (id) WHERE error IS NULL;
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{base}', '');
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS {base}_notify ON {table};
CREATE TRIGGER {base}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"""


class OutboxConsumer:
    def __init__(self, url: str) -> None:
        from clarion.ingest import label, split_params

        rest, params = split_params(url, {"table", "poll", "source"})
        parts = urlsplit(rest)
        scheme = "postgresql"
        self.dsn = urlunsplit(parts._replace(scheme=scheme))
        self.table = table_name(params.get("table", TABLE))
        self.channel = self.table.rsplit(".", 1)[-1]
        self.poll = float(params.get("poll", "2.0"))
        self.name = label(url)
        where = f"{parts.hostname}:{parts.port or 5432}{parts.path}/{self.table}"
        self.source = params.get("source") or source_id("outbox", where)
        self._conn: Any = None
        self._tx: Any = None
        self._wake = asyncio.Event()

    async def connect(self) -> None:
        self._conn = await asyncpg.connect(self.dsn)
        await self._conn.add_listener(self.channel, self._notified)

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def fetch(self, limit: int, wait: float) -> list[Message]:
        """The oldest waiting rows, locked in a transaction that `settle` ends; if none, waits
        for a NOTIFY or the poll interval, then looks once more."""
        rows = await self._claim(limit)
        if not rows:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=min(wait, self.poll))
            rows = await self._claim(limit)
        return [Message(str(r["id"]), r["payload"], r["id"]) for r in rows]

    async def _claim(self, limit: int) -> list[Any]:
        self._wake.clear()
        if self._conn.is_closed():
            raise ConnectionError("the outbox connection is closed")
        tx = self._conn.transaction()
        await tx.start()
        try:
            rows = await self._conn.fetch(
                f"SELECT id, payload FROM {self.table} WHERE error IS NULL "
                "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
                limit,
            )
        except BaseException:
            await tx.rollback()
            raise
        if not rows:
            await tx.rollback()
            return []
        self._tx = tx
        return list(rows)

    async def settle(self, outcome: Outcome) -> None:
        """Delete the committed rows, mark the dead ones, and commit: the rows handed back are
        unlocked untouched, for the next claim."""
        tx, self._tx = self._tx, None
        if tx is None:
            return
        try:
            if outcome.done:
                await self._conn.execute(
                    f"DELETE FROM {self.table} WHERE id = ANY($1::bigint[])",
                    [m.handle for m in outcome.done],
                )
            if outcome.dead:
                await self._conn.executemany(
                    f"UPDATE {self.table} SET error = $2::jsonb WHERE id = $1",
                    [(m.handle, orjson.dumps(e).decode()) for m, e in outcome.dead],
                )
        except BaseException:
            await tx.rollback()
            raise
        await tx.commit()

    async def lag(self) -> int | None:
        if self._tx is not None:
            return None
        n = await self._conn.fetchval(f"SELECT count(*) FROM {self.table} WHERE error IS NULL")
        return int(n)

    async def close(self) -> None:
        conn, self._conn, self._tx = self._conn, None, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), timeout=2)
            if not conn.is_closed():
                conn.terminate()
