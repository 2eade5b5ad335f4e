"""Publishing in the store: load -> plan -> write in one transaction.

The store loads the facts a batch of drafts needs (idempotency keys, type settings, fatigue
state, collapse candidates, push subscribers), the planner (clarion/planner) decides everything
from them and a `now`, the store takes the seqs the decisions need (one statement, which locks
the stream rows) and the planner numbers the batch from the heads before; then the store
writes the rows the plan lists: notifications, stream events, routes, idempotency keys,
throttles, digest items, push outbox. Digests due are flushed the same way, in the
transaction that removes their items."""

from __future__ import annotations

from datetime import datetime

import orjson
from sqlalchemy import delete, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Draft, Published, utcnow
from clarion.ids import new_id
from clarion.planner import Facts, Plan, Prior, decide, digest_draft, number, summaries, wants
from clarion.store import deliveries, fatigue, holes
from clarion.store.db import Database
from clarion.store.inline import inline
from clarion.store.outbox import any_due
from clarion.store.push import PushStore
from clarion.store.schema import (
    digest_items,
    escalations,
    events,
    idempotency,
    notifications,
    routes,
)
from clarion.store.settings import TypeCache
from clarion.store.streams import advance, advance_types


class Publishing:
    """Publish (group commit) and the digest flush, which publishes too."""

    db: Database
    types: TypeCache

    async def publish(self, drafts: list[Draft]) -> list[Published]:
        """Store drafts in one transaction (group commit), each with its own result."""
        try:
            return await self._transact(drafts)
        except IntegrityError:
            # A concurrent publish elsewhere (another node, on PostgreSQL) committed one of our
            # idempotency keys (or throttle rows) first, or one draft is one the database
            # refuses. Several drafts: the group commit (batching.py) writes them one by one,
            # each answered alone (a redo here would commit the ones before a bad draft, then
            # fail them with it). One: its key is committed now, so the redo finds it.
            if len(drafts) > 1:
                raise
            return await self._transact(drafts)

    async def _transact(self, drafts: list[Draft]) -> list[Published]:
        """`_publish` in a transaction of its own, all its statements in one trip to the
        database (store/inline.py): per statement, the trips cost more than SQLite."""
        return await self.db.transact(lambda sync: inline(sync, lambda c: self._publish(c, drafts)))

    async def _publish(self, conn: AsyncConnection, drafts: list[Draft]) -> list[Published]:
        """Load the facts the batch needs, plan, write what the plan says."""
        now = utcnow()
        made = await self._plan(conn, drafts, now)
        await self._write(conn, made)
        await deliveries.note_publish(self.db, conn, drafts, made, now)  # keys, skips, holds
        return made.results

    async def _load(self, conn: AsyncConnection, drafts: list[Draft]) -> Facts:
        facts = Facts(types=await self.types.get(conn))
        keys = sorted({d.idempotency_key for d in drafts if d.idempotency_key})
        if keys:
            rows = await conn.execute(
                select(idempotency.c.key, idempotency.c.result).where(idempotency.c.key.in_(keys))
            )
            facts.prior = {k: _prior(r) for k, r in rows.all()}
        # A replayed draft needs nothing more, and a batch of replays takes no stream lock.
        fresh = [d for d in drafts if d.idempotency_key not in facts.prior]
        if not fresh:
            return facts
        need = wants(fresh, facts.types)
        facts.choices = await fatigue.choices(self.db, conn, need)
        facts.throttles = await fatigue.throttle_windows(conn, need)
        facts.digests = await fatigue.digest_windows(conn, need)
        facts.collapsible = await fatigue.collapsible(conn, need)
        facts.collapsible_shared = await fatigue.collapsible_shared(conn, need)
        facts.subscribers = await PushStore.subscribers(conn, *need.push)
        return facts

    async def _plan(self, conn: AsyncConnection, drafts: list[Draft], now: datetime) -> Plan:
        """Load, decide, take the seqs the batch needs (one statement per heads table, which
        locks their rows), number the batch from the heads before."""
        decided = decide(drafts, await self._load(conn, drafts), now)
        heads = await advance(self.db, conn, decided.streams) if decided.streams else {}
        typed = await advance_types(self.db, conn, decided.typed) if decided.typed else {}
        return number(decided, heads, typed)

    async def _write(self, conn: AsyncConnection, made: Plan) -> None:
        """Write a plan (in the transaction its facts were loaded in)."""
        await fatigue.write(self.db, conn, made.throttles, made.held, made.replaced)
        await self.db.insert_rows(conn, idempotency, made.idempotency)
        await self.db.insert_rows(conn, notifications, made.notifications)
        await self.db.insert_rows(conn, events, made.events)
        if made.routes:
            await self.db.insert_rows(conn, routes, made.routes)
            hidden = [(r["stream"], r["seq"], r["type"]) for r in made.routes if r["replaced"]]
            await holes.count(self.db, conn, hidden)
        # Web Push: the outbox rows commit with the notification.
        await PushStore.queue(conn, made.pushes)
        # And so do the escalations (store/escalations.py).
        await self.db.insert_rows(conn, escalations, made.escalations)

    async def flush_digests(self, now: datetime, limit: int = 100) -> list[Published]:
        """Publish the digests that are due: one summary per user and type, in the same
        transaction that removes their items (so a crash repeats nothing and loses nothing;
        on PostgreSQL the DELETE's row locks keep two nodes from sending one digest twice)."""
        if not await any_due(self.db, digest_items, now):  # the common case: no write lock
            return []
        async with self.db.write() as conn:
            due = (
                await conn.execute(
                    select(digest_items.c.user_id, digest_items.c.type)
                    .where(digest_items.c.due_at <= now)
                    .group_by(digest_items.c.user_id, digest_items.c.type)
                    .limit(limit)
                )
            ).all()
            if not due:
                return []
            taken = (
                await conn.execute(
                    delete(digest_items)
                    .where(
                        tuple_(digest_items.c.user_id, digest_items.c.type).in_(
                            [tuple(r) for r in due]
                        )
                    )
                    .returning(
                        digest_items.c.user_id, digest_items.c.type, digest_items.c.notification_id
                    )
                )
            ).all()
            ids = sorted({nid for _, _, nid in taken})
            docs = {
                nid: orjson.loads(doc)
                for nid, doc in (
                    await conn.execute(
                        select(notifications.c.id, notifications.c.doc).where(
                            notifications.c.id.in_(ids)
                        )
                    )
                ).all()
            }
            drafts = [
                digest_draft(new_id(), user, type, items, now)
                for user, type, items in summaries([(u, t, n) for u, t, n in taken], docs)
            ]
            if not drafts:
                return []
            made = await self._plan(conn, drafts, now)
            await self._write(conn, made)
            return made.results


def _prior(result: bytes) -> Prior:
    data = orjson.loads(result)
    return Prior(data["id"], data["recipients"], data.get("streams", []), data.get("body"))
