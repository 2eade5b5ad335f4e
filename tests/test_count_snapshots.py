"""A state change's unread count is the count as of its own event, whatever commits meanwhile.

An unread count is its facts (the routes expired and not swept yet, subtracted by the rules),
then probes (the hidden ones, subtracted by bucket); a mark read also writes the mark and takes
a seq on the user's stream before it counts (store/inbox.py `_change`). On PostgreSQL another
node's commit can land between those statements. Each test runs one such commit, to its end or
until it waits for this transaction, right after the facts were read; then checks what a
client sees:
  - an expiry sweep: the routes it hides were already subtracted as expired; they must not
    be subtracted again (a count and a mark read);
  - a publish to the user: the client applies events in seq order (the publish adds one,
    the state event sets the count), so its count must end at the store's.
On SQLite a read is one snapshot and the one writer makes the other commit wait; on
PostgreSQL a count reads in one REPEATABLE READ transaction (`Database.consistent`) and a state
change runs in REPEATABLE READ, again when such a commit conflicts (`Database.transact`).
"""

from __future__ import annotations

import asyncio
import secrets
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.store import SQLStore
from clarion.store import inbox as inbox_store_module
from clarion.streams import user_stream

T0 = datetime.now(UTC).replace(microsecond=0)
TTL = timedelta(hours=1)


def _draft(
    at: datetime, *, users: Sequence[str] = (), shared: Sequence[str] = (), ttl: Any = None
) -> Draft:
    nid = new_id()
    expires = at + ttl if ttl is not None else None
    doc = notification_doc(
        nid, iso(at), type="message", priority="normal", title=nid, expires_at=iso(expires)
    )
    return Draft(
        nid,
        "message",
        "normal",
        doc,
        at,
        expires_at=expires,
        users=list(users),
        shared=list(shared),
    )


class Elsewhere:
    """Another store on the same database, on a thread and event loop of its own (another
    node): `during_facts` runs `act` on it right after the next facts are read, waiting for
    it up to a second (it may be waiting for the transaction that reads them)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.store = SQLStore(url)
        self.call(self.store.connect())
        self.pending: list[Any] = []

    def call(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    @contextmanager
    def during_facts(
        self, act: Callable[[SQLStore], Coroutine[Any, Any, Any]]
    ) -> Iterator[list[Any]]:
        real = inbox_store_module.load_facts
        done: list[Any] = []

        def facts_then_act(*args: Any) -> Any:
            facts = real(*args)
            if not self.pending:
                future = asyncio.run_coroutine_threadsafe(act(self.store), self.loop)
                self.pending.append(future)
                with suppress(TimeoutError):  # waiting for this transaction: lands after it
                    done.append(future.result(1))
            return facts

        with mock.patch.object(inbox_store_module, "load_facts", facts_then_act):
            yield done
        if self.pending:
            done[:] = [self.pending[0].result(30)]

    def close(self) -> None:
        self.call(self.store.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


async def test_a_publish_during_a_mark_read_lands_in_the_clients_count(sql_store: SQLStore) -> None:
    user = f"snap-{secrets.token_hex(4)}"
    ids = [(await sql_store.publish([_draft(T0, users=[user])]))[0].id for _ in range(3)]
    other = Elsewhere(sql_store.db.url)
    try:
        with other.during_facts(lambda s: s.publish([_draft(T0, users=[user])])) as done:
            changed = await sql_store.change_state(user, "read", ids[0])
        (published,) = done[0]
    finally:
        other.close()
    assert changed.event is not None
    (mine,) = [e for e in published.events if e.stream == user_stream(user)]
    # The client: the publish adds one if it comes after the state event, else the state
    # event's count already holds it.
    seen = changed.unread + (1 if mine.seq > changed.event.seq else 0)
    assert seen == await sql_store.unread_count(user) == 3


async def _expiring(store: SQLStore) -> tuple[str, str, list[str], datetime]:
    """A user following a topic with 3 live notifications and 5 expired, not swept yet at
    the instant returned; the ids of the live ones."""
    tag = secrets.token_hex(4)
    user, topic = f"snap-{tag}", f"topic:snap-{tag}"
    await store.follow([user], topic, grant=True)
    later = T0 + 2 * TTL
    while await store.expire(later):  # whatever earlier tests left expired
        pass
    live = [(await store.publish([_draft(later, shared=[topic])]))[0].id for _ in range(3)]
    await store.publish([_draft(later, shared=[topic], ttl=TTL / 60) for _ in range(5)])
    return user, topic, live, later + TTL


def _sweep(at: datetime) -> Callable[[SQLStore], Coroutine[Any, Any, int]]:
    async def sweep(store: SQLStore) -> int:
        swept = 0
        while n := await store.expire(at):
            swept += n
        return swept

    return sweep


async def test_a_sweep_during_a_count_is_not_subtracted_twice(sql_store: SQLStore) -> None:
    user, _, _, at = await _expiring(sql_store)
    other = Elsewhere(sql_store.db.url)
    try:
        with (
            mock.patch("clarion.store.inbox.utcnow", lambda: at),
            other.during_facts(_sweep(at)) as done,
        ):
            assert await sql_store.unread_count(user) == 3
            assert await sql_store.unread_count(user) == 3
    finally:
        other.close()
    assert done == [5]


async def test_a_sweep_during_a_mark_read_is_not_subtracted_twice(sql_store: SQLStore) -> None:
    user, _, live, at = await _expiring(sql_store)
    other = Elsewhere(sql_store.db.url)
    try:
        with (
            mock.patch("clarion.store.inbox.utcnow", lambda: at),
            other.during_facts(_sweep(at)) as done,
        ):
            changed = await sql_store.change_state(user, "read", live[0])
            assert changed.unread == 2
            assert await sql_store.unread_count(user) == 2
    finally:
        other.close()
    assert done == [5]
