"""Audiences in the store: who follows which shared stream (topics, roles, `all`), since
which seq and until which, and the `follow`/`unfollow` events that tell the user's sessions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion.domain import Forbidden, Meta, StoredEvent, utcnow
from clarion.events import follow_event
from clarion.store.batches import in_lists
from clarion.store.db import Database
from clarion.store.schema import events, follows
from clarion.store.streams import allocate_in, heads_in, heads_of
from clarion.streams import ROLE_PREFIX, TOPIC_PREFIX, matches, topic_of, user_stream


def _set_follow(conn: Connection, user: str, name: str, **values: Any) -> None:
    conn.execute(
        update(follows).where(follows.c.user_id == user, follows.c.stream == name).values(**values)
    )


class Audiences:
    """Follows: from tokens (`sync_audiences`), from users and from publishers."""

    db: Database

    async def sync_audiences(
        self, items: list[tuple[str, list[str], list[str]]]
    ) -> list[StoredEvent]:
        """Bring users' follows in line with their tokens, many users per transaction.

        Each item is (user, the shared streams its token gives: `all` and its roles, its
        `topics` claim patterns). Missing streams start at their current head; roles no longer
        in the token end; topics followed by claim alone end when the claim stops covering
        them (an `unfollow` event tells the user's live sessions)."""
        now = utcnow()
        return await self.db.transact(lambda c: self._sync_in(c, items, now))

    def _sync_in(
        self, conn: Connection, items: list[tuple[str, list[str], list[str]]], now: datetime
    ) -> list[StoredEvent]:
        """`sync_audiences` inside its transaction: all its statements in one trip."""
        users = list(dict.fromkeys(u for u, _, _ in items))
        out: list[StoredEvent] = []
        have: dict[str, dict[str, tuple[int | None, bool]]] = {}
        for chunk in in_lists(users):  # padded: the batch's size does not change the SQL
            rows = conn.execute(
                select(
                    follows.c.user_id, follows.c.stream, follows.c.until_seq, follows.c.granted
                ).where(follows.c.user_id.in_(chunk))
            ).all()
            for user, stream, until, granted in rows:
                have.setdefault(user, {})[stream] = (until, bool(granted))
        names = {n for _, shared, _ in items for n in shared}
        names |= {n for u in users for n in have.get(u, {})}
        head = heads_of(conn, sorted(names))
        fresh, restart, end = [], [], []
        for user, shared, patterns in dict((u, (u, s, p)) for u, s, p in items).values():
            mine = have.get(user, {})
            for name in shared:
                if name not in mine:
                    fresh.append({"user_id": user, "stream": name})
                elif mine[name][0] is not None:
                    restart.append((user, name))
            for name, (until, granted) in mine.items():
                if until is not None or name in shared:
                    continue
                topic = topic_of(name)
                if name.startswith(ROLE_PREFIX):
                    end.append((user, name, False))
                elif topic is not None and not granted and not matches(topic, patterns):
                    end.append((user, name, True))
        if fresh:  # executemany: one statement whatever the number of rows (batches.py)
            conn.execute(
                self.db.insert(follows).on_conflict_do_nothing(),
                [
                    {**f, "since_seq": head[f["stream"]], "created_at": now, "granted": False}
                    for f in fresh
                ],
            )
        for user, name in restart:
            _set_follow(conn, user, name, since_seq=head[name], until_seq=None)
        for user, name, tell in end:
            _set_follow(conn, user, name, until_seq=head[name])
            if tell:
                out += self._log_follows_in(conn, [user], "unfollow", name, head[name])
        return out

    async def _log_follows(
        self, conn: AsyncConnection, users: list[str], kind: str, name: str, at: int
    ) -> list[StoredEvent]:
        return await self.db.run(conn, lambda c: self._log_follows_in(c, users, kind, name, at))

    def _log_follows_in(
        self, conn: Connection, users: list[str], kind: str, name: str, at: int
    ) -> list[StoredEvent]:
        """A `follow`/`unfollow` event on each user's stream, in two statements for all."""
        if not users:
            return []
        heads = allocate_in(self.db, conn, {user_stream(u): 1 for u in users})
        now = utcnow()
        out = []
        for user in users:
            stream = user_stream(user)
            out.append(
                StoredEvent(
                    stream,
                    heads[stream],
                    follow_event(stream, heads[stream], kind, name, at),
                    Meta(kind, topic=name, at=at),
                )
            )
        conn.execute(
            insert(events),
            [
                {
                    "stream": e.stream,
                    "seq": e.seq,
                    "kind": kind,
                    "payload": e.payload,
                    "created_at": now,
                }
                for e in out
            ],
        )
        return out

    async def follow(
        self, users: list[str], name: str, *, grant: bool, allowed: bool = True
    ) -> list[StoredEvent]:
        """Users start following a topic stream from its current head on (a no-op for those
        who already do). `grant`: the publisher subscribes them (and lets them re-follow);
        otherwise the user follows, which needs `allowed` (its token's claim) or a grant.
        A few statements for any number of users (a publisher subscribes up to 1,000 at once)."""
        users = list(dict.fromkeys(users))
        async with self.db.write() as conn:
            head = (await heads_in(conn, [name]))[name]
            rows = (
                await conn.execute(
                    select(follows.c.user_id, follows.c.until_seq, follows.c.granted).where(
                        follows.c.stream == name, follows.c.user_id.in_(users)
                    )
                )
            ).all()
            known = {u: (until, bool(granted)) for u, until, granted in rows}
            if not (grant or allowed) and not all(known.get(u, (0, False))[1] for u in users):
                raise Forbidden(f"not allowed to follow {topic_of(name) or name!r}")
            fresh = [u for u in users if u not in known]
            again = [u for u in users if u in known and known[u][0] is not None]
            upgrade = [u for u in users if u in known and known[u][0] is None and not known[u][1]]
            if fresh:
                now = utcnow()
                await conn.execute(
                    insert(follows),
                    [
                        {
                            "user_id": u,
                            "stream": name,
                            "since_seq": head,
                            "created_at": now,
                            "granted": grant,
                        }
                        for u in fresh
                    ],
                )
            where = follows.c.stream == name
            grant_value = {"granted": True} if grant else {}
            if again:
                await conn.execute(
                    update(follows)
                    .where(where, follows.c.user_id.in_(again))
                    .values(since_seq=head, until_seq=None, **grant_value)
                )
            if upgrade and grant:
                await conn.execute(
                    update(follows)
                    .where(where, follows.c.user_id.in_(upgrade))
                    .values(granted=True)
                )
            return await self._log_follows(conn, fresh + again, "follow", name, head)

    async def unfollow(self, users: list[str], name: str, *, revoke: bool) -> list[StoredEvent]:
        """Users stop following a topic: what came before stays in their inboxes. `revoke`
        (the publisher) also withdraws the grant."""
        users = list(dict.fromkeys(users))
        async with self.db.write() as conn:
            head = (await heads_in(conn, [name]))[name]
            where = and_(follows.c.stream == name, follows.c.user_id.in_(users))
            active = list(
                (
                    await conn.execute(
                        select(follows.c.user_id).where(where, follows.c.until_seq.is_(None))
                    )
                ).scalars()
            )
            if revoke:
                await conn.execute(update(follows).where(where).values(granted=False))
            if active:
                await conn.execute(
                    update(follows)
                    .where(follows.c.stream == name, follows.c.user_id.in_(active))
                    .values(until_seq=head)
                )
            return await self._log_follows(conn, active, "unfollow", name, head)

    async def followed(self, user: str) -> list[tuple[str, bool]]:
        """The topic streams a user follows now, with whether the publisher granted them."""
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(follows.c.stream, follows.c.granted)
                    .where(
                        follows.c.user_id == user,
                        follows.c.stream.startswith(TOPIC_PREFIX),
                        follows.c.until_seq.is_(None),
                    )
                    .order_by(follows.c.stream)
                )
            ).all()
        return [(stream, bool(granted)) for stream, granted in rows]

    async def followers(self, name: str, after: str | None, limit: int) -> list[str]:
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(follows.c.user_id)
                .where(
                    follows.c.stream == name,
                    follows.c.until_seq.is_(None),
                    follows.c.user_id > (after or ""),
                )
                .order_by(follows.c.user_id)
                .limit(limit)
            )
            return list(rows.scalars())
