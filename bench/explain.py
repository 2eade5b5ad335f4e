"""PostgreSQL plans of the inbox's queries, with history behind them.

Loads N notifications into a fresh PostgreSQL database through the store (broadcasts to `all`,
topic notifications, 10% personal), then runs one user's first page, next page, unread count,
mark read and read-all with every statement captured, and prints `EXPLAIN (ANALYZE, BUFFERS)` of
each distinct one, before and after `ANALYZE`. docs/architecture.md quotes its output.

    python bench/explain.py --notifications 200000
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import event

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.inbox import PagePosition
from clarion.store import SQLStore

ADMIN = "postgresql://postgres@127.0.0.1:5432/test"


def drafts(count: int, users: list[str], topics: list[str]) -> list[Draft]:
    out = []
    now = datetime.now(UTC)
    for _ in range(count):
        nid = new_id()
        roll = random.random()
        kind = random.choice(["message", "alert", "system"])
        doc = notification_doc(nid, iso(now), type=kind, priority="normal", title="t")
        if roll < 0.1:
            audience: dict[str, Any] = {"users": [random.choice(users)], "shared": []}
        elif roll < 0.4:
            audience = {"users": [], "shared": [random.choice(topics)]}
        else:
            audience = {"users": [], "shared": ["all"]}
        key = "build" if random.random() < 0.01 else None
        out.append(Draft(nid, kind, "normal", doc, now, collapse_key=key, **audience))
    return out


async def main(count: int) -> None:
    name = "clarion_explain_" + secrets.token_hex(4)
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = ADMIN.rsplit("/", 1)[0] + "/" + name
    store = SQLStore(url)
    try:
        await store.connect()
        users = [f"u{i}" for i in range(10_000)]
        topics = [f"topic:t{i}" for i in range(10)]
        me = "u1"
        await store.follow([me], "all", grant=True)
        await store.follow([me], topics[0], grant=True)
        await store.follow([me], topics[1], grant=True)
        started = time.monotonic()
        for done in range(0, count, 500):
            await store.publish(drafts(min(500, count - done), users, topics))
        print(f"loaded {count} in {time.monotonic() - started:.0f} s")
        captured: dict[str, Any] = {}

        def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE", "DELETE")):
                captured.setdefault(statement, params)

        event.listen(store.db.writer.sync_engine, "before_cursor_execute", capture)
        page = await store.list_inbox(me, "all", 20, PagePosition())
        assert page.next_cursor
        await store.list_inbox(me, "all", 20, PagePosition.decode(page.next_cursor))
        await store.list_inbox(me, "unread", 20, PagePosition())
        await store.unread_count(me)
        await store.change_state(me, "read", page.items[0]["id"])
        await store.change_state(me, "read_all", None)
        event.remove(store.db.writer.sync_engine, "before_cursor_execute", capture)
        db = await asyncpg.connect(url)
        for label in ("statistics not refreshed", "after ANALYZE"):
            print(f"\n######## {label}\n")
            for sql, params in captured.items():
                if not sql.lstrip().upper().startswith("SELECT"):
                    continue
                args = list(params) if isinstance(params, (tuple, list)) else []
                plan = await db.fetch("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, *args)
                print(sql.strip()[:300].replace("\n", " "))
                print("\n".join("    " + r[0] for r in plan), "\n")
            await db.execute("ANALYZE")
        await db.close()
    finally:
        await store.close()
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--notifications", type=int, default=200_000)
    asyncio.run(main(parser.parse_args().notifications))
