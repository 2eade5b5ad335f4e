"""Publishing in the store: drafts become notifications, stream events, inbox rows and push
outbox rows in one transaction; idempotency keys; digests flushed when due."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import delete, insert, select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Draft, Published, StoredEvent, utcnow
from clarion.events import notification_event
from clarion.store import holes
from clarion.store.db import Database
from clarion.store.fatigue import Router, digest_draft
from clarion.store.push import PushStore
from clarion.store.schema import (
    digest_items,
    events,
    idempotency,
    notifications,
)
from clarion.store.schema import routes as routes_table
from clarion.store.settings import TypeCache
from clarion.store.streams import allocate_routed, number_types
from clarion.streams import user_stream


class Publishing:
    """Publish (group commit) and the digest flush, which publishes too."""

    db: Database
    types: TypeCache
    push: PushStore

    async def publish(self, drafts: list[Draft]) -> list[Published]:
        """Store drafts in one transaction (group commit), each with its own result."""
        try:
            async with self.db.write() as conn:
                return await self._publish(conn, drafts)
        except IntegrityError:
            # A concurrent publish elsewhere (another node, on PostgreSQL) committed one of our
            # idempotency keys (or throttle rows) first: redo them one by one, so only that one
            # turns into a duplicate. Its key is committed now, so the redo finds it.
            if len(drafts) > 1:
                return [(await self.publish([d]))[0] for d in drafts]
            async with self.db.write() as conn:
                return await self._publish(conn, drafts)

    async def _publish(self, conn: AsyncConnection, drafts: list[Draft]) -> list[Published]:
        results: dict[int, Published] = {}
        keys = [d.idempotency_key for d in drafts if d.idempotency_key]
        prior: dict[str, bytes] = {}
        if keys:
            rows = await conn.execute(
                select(idempotency.c.key, idempotency.c.result).where(idempotency.c.key.in_(keys))
            )
            prior = {k: r for k, r in rows.all()}
        fresh: list[tuple[int, Draft]] = []
        first: dict[str, int] = {}  # a key repeated within this batch: a replay of the first
        repeats: dict[int, int] = {}
        for i, d in enumerate(drafts):
            if d.idempotency_key and d.idempotency_key in prior:
                data = orjson.loads(prior[d.idempotency_key])
                results[i] = Published(
                    data["id"], [], data["recipients"], True, data.get("streams", [])
                )
                # Rows from before fingerprints carry none: they replay as they always did.
                results[i].conflict = data.get("body", d.fingerprint) != d.fingerprint
                continue
            if d.idempotency_key in first:
                repeats[i] = first[d.idempotency_key]
                continue
            d.users = list(dict.fromkeys(d.users))
            if d.idempotency_key:
                first[d.idempotency_key] = i
            fresh.append((i, d))
        if not fresh:
            return [results[i] for i in range(len(drafts))]
        now = utcnow()
        routes = await Router(self.db, conn, now, await self.types.get(conn)).route(
            [d for _, d in fresh]
        )
        counts: dict[str, int] = {}
        for (_, d), route in zip(fresh, routes, strict=True):
            for name in [user_stream(u) for u in route.users] + d.shared:
                counts[name] = counts.get(name, 0) + 1
        heads = await allocate_routed(self.db, conn, counts) if counts else {}
        next_seq = {name: heads[name][0] - counts[name] + 1 for name in counts}
        next_n = {name: heads[name][1] - counts[name] + 1 for name in counts}
        typed: dict[tuple[str, str], int] = {}
        for _, d in fresh:
            for name in d.shared:
                typed[(name, d.type)] = typed.get((name, d.type), 0) + 1
        type_heads = await number_types(self.db, conn, typed) if typed else {}
        next_tn = {key: type_heads[key] - typed[key] + 1 for key in typed}
        note_rows, event_rows, route_rows, id_rows = [], [], [], []
        for (i, d), route in zip(fresh, routes, strict=True):
            # Shared streams take precedence over personal copies, earlier (sorted) shared
            # streams over later ones: each copy names those above it (`Session.wants`).
            shared = sorted(d.shared)
            seqs = {}
            for name in shared:
                seqs[name] = next_seq[name]
                next_seq[name] += 1
            stored: list[StoredEvent] = []
            for user in route.users:
                name = user_stream(user)
                seq = next_seq[name]
                next_seq[name] = seq + 1
                replaces, collapsed = route.replaced.get(user, ([], 0))
                payload = notification_event(
                    name, seq, d.doc, also=seqs, replaces=replaces, collapsed=collapsed
                )
                stored.append(StoredEvent(name, seq, payload))
            replaces, collapsed = route.replaced.get(None, ([], 0))
            for rank, name in enumerate(shared):
                above = {s: seqs[s] for s in shared[:rank]}
                payload = notification_event(
                    name, seqs[name], d.doc, also=above, replaces=replaces, collapsed=collapsed
                )
                stored.append(StoredEvent(name, seqs[name], payload))
            note_rows.append(
                {
                    "id": d.id,
                    "type": d.type,
                    "priority": d.priority,
                    "collapse_key": d.collapse_key,
                    "doc": d.doc,
                    "created_at": d.created_at,
                    "expires_at": d.expires_at,
                    "publisher": d.publisher,
                }
            )
            event_rows += [
                {
                    "stream": e.stream,
                    "seq": e.seq,
                    "kind": "notification",
                    "notification_id": d.id,
                    "payload": e.payload,
                    "created_at": d.created_at,
                    "expires_at": d.expires_at,
                }
                for e in stored
            ]
            for e, who in zip(stored, [*route.users, *[None] * len(shared)], strict=True):
                also = seqs if who is not None else {s: seqs[s] for s in shared if s < e.stream}
                replaced = route.replaced_by.get(who) is not None
                n = next_n[e.stream]
                next_n[e.stream] = n + 1
                tn = None
                if who is None:
                    tn = next_tn[(e.stream, d.type)]
                    next_tn[(e.stream, d.type)] = tn + 1
                route_rows.append(
                    {
                        "stream": e.stream,
                        "seq": e.seq,
                        "notification_id": d.id,
                        "type": d.type,
                        "n": n,
                        "tn": tn,
                        "expires_at": d.expires_at,
                        "replaced": replaced,
                        "also": orjson.dumps(also) if also else None,
                        "collapsed": route.replaced.get(who, ([], 0))[1],
                        "irregular": holes.HIDDEN if replaced else int(bool(also or d.expires_at)),
                        "collapse_key": None if replaced else d.collapse_key,
                    }
                )
            streams_out = [user_stream(u) for u in route.users] + d.shared
            result = Published(d.id, stored, len(route.users), held=route.held)
            result.skipped = route.skipped
            result.replayed_streams = streams_out
            results[i] = result
            if d.idempotency_key:
                doc = {
                    "id": d.id,
                    "recipients": len(route.users),
                    "streams": streams_out,
                    "body": d.fingerprint,
                }
                id_rows.append(
                    {
                        "key": d.idempotency_key,
                        "notification_id": d.id,
                        "result": orjson.dumps(doc),
                        "created_at": d.created_at,
                    }
                )
        if id_rows:
            await conn.execute(insert(idempotency), id_rows)
        await conn.execute(insert(notifications), note_rows)
        if event_rows:
            await conn.execute(insert(events), event_rows)
        if route_rows:
            await conn.execute(insert(routes_table), route_rows)
            hidden = [r for r in route_rows if r["irregular"] == holes.HIDDEN]
            found = [(str(r["stream"]), int(str(r["seq"])), str(r["type"])) for r in hidden]
            await holes.count(self.db, conn, found)
        # Web Push: the outbox rows commit with the notification (store/push.py).
        await self.push.queue(
            conn, [(d, r.users) for (_, d), r in zip(fresh, routes, strict=True)], now
        )
        for j, i in repeats.items():
            done = results[i]
            results[j] = Published(done.id, [], done.recipients, True, done.replayed_streams)
            results[j].conflict = drafts[j].fingerprint != drafts[i].fingerprint
        return [results[i] for i in range(len(drafts))]

    async def flush_digests(self, now: datetime, limit: int = 100) -> list[Published]:
        """Publish the digests that are due: one summary per user and type, in the same
        transaction that removes their items (so a crash repeats nothing and loses nothing;
        on PostgreSQL the DELETE's row locks keep two nodes from sending one digest twice)."""
        async with self.db.read() as conn:  # the common case, nothing due, takes no write lock
            due_at = digest_items.c.due_at
            if (await conn.execute(select(due_at).where(due_at <= now).limit(1))).first() is None:
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
            groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
            for user, type, nid in sorted(taken, key=lambda r: r[2]):
                if nid in docs:
                    groups.setdefault((user, type), []).append(docs[nid])
            drafts = [
                digest_draft(user, type, items, now) for (user, type), items in groups.items()
            ]
            return await self._publish(conn, drafts) if drafts else []
