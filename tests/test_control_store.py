"""Control decisions and store rooms with a fixed clock (docs/control.md): when a schedule is
due, what a cancel leaves, release exactly once across two stores, webhook order and
disabling. The wall-clock versions are in test_control.py and test_control_cluster.py."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import event

from clarion.domain import Draft, iso
from clarion.events import notification_doc
from clarion.planner.schedule import backoff, due_time, without_users
from clarion.store import SQLStore
from clarion.store.deliveries import hashes, split, user_hash
from clarion.store.webhooks import NO_HOOKS, Endpoint, Hooks, Message, change_events, outbox_rows

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def test_due_time() -> None:
    assert due_time(None, None, NOW) is None
    assert due_time(None, 0, NOW) is None
    assert due_time(None, 30, NOW) == NOW + timedelta(seconds=30)
    assert due_time(NOW + timedelta(hours=1), None, NOW) == NOW + timedelta(hours=1)
    assert due_time(NOW - timedelta(seconds=1), None, NOW) is None  # late: send now


def test_what_a_cancel_leaves() -> None:
    body = {"users": ["a", "b"], "title": "t"}
    assert without_users(body, []) == (None, 1)  # all of it
    assert without_users(body, ["b", "z"]) == ({"users": ["a"], "title": "t"}, 1)
    assert without_users(body, ["a", "b"]) == (None, 2)
    shared = {"users": ["a"], "topics": ["p"], "title": "t"}
    assert without_users(shared, ["a"]) == ({"users": [], "topics": ["p"], "title": "t"}, 1)


def test_backoff_doubles_up_to_a_cap() -> None:
    assert [backoff(n, 5) for n in (1, 2, 3)] == [5, 10, 20]
    assert backoff(30, 5) == 3600


def draft_of(body: dict[str, Any], id: str, publisher: str | None, now: datetime) -> Draft:
    doc = notification_doc(id, iso(now), type="t", priority="normal", title=body["title"])
    return Draft(id=id, type="t", priority="normal", doc=doc, created_at=now, users=body["users"])


async def release_race(url: str) -> None:
    """Two stores (two nodes) release the same due rows at once: each is published once."""
    first, second = SQLStore(url), SQLStore(url)
    await first.connect()
    await second.connect()
    try:
        ids = [f"01SCHED{i:019d}" for i in range(40)]
        for i, id in enumerate(ids):
            body = {"users": [f"race-{i % 3}"], "title": f"s{i}"}
            await first.schedule(id, body, NOW + timedelta(seconds=5), None, None, NOW)
        assert await first.release_due(NOW, draft_of) == []  # not due yet
        due = NOW + timedelta(seconds=6)
        batches = await asyncio.gather(
            *(s.release_due(due, draft_of, 7) for s in (first, second, first, second))
        )
        while more := await first.release_due(due, draft_of, 7):
            batches.append(more)
        released = [r.id for batch in batches for r in batch]
        assert sorted(released) == ids
        seqs = [e.seq for batch in batches for r in batch for e in r.events]
        assert len(seqs) == 40
    finally:
        await first.close()
        await second.close()


def test_release_is_exactly_once_on_sqlite(tmp_path: Path) -> None:
    asyncio.run(release_race(f"sqlite:///{tmp_path / 'c.db'}"))


def test_release_is_exactly_once_on_postgres(pg_url: str) -> None:
    asyncio.run(release_race(pg_url))


async def webhook_rooms(url: str) -> None:
    store = SQLStore(url)
    await store.connect()
    try:
        hooks = store.webhooks
        await hooks.put("h", "https://a.io/x", ["user.connected"], None, "whsec_AAAA", NOW)
        rows = [
            {
                "id": f"msg_{i}",
                "webhook": "h",
                "user_id": user,
                "event": "user.connected",
                "payload": orjson.dumps({"i": i}),
                "due_at": NOW,
                "created_at": NOW,
            }
            for i, user in enumerate(["a", "a", "b", "a", "b"])
        ]
        # Nothing queued yet: a probe on a reader says so, and the writer is left alone (the
        # sender polls every second on every node).
        writes: list[int] = []
        pool = store.db.writer.sync_engine.pool
        event.listen(pool, "checkout", lambda *args: writes.append(1))
        assert await hooks.claim(NOW, 10, 20) == []
        assert writes == []
        await hooks.queue(rows)
        assert writes == [1]
        # Only the head of each user's queue is claimed: a's second waits for its first.
        claimed = await hooks.claim(NOW, 10, 20)
        assert [(m.id, m.user_id, m.attempts) for m in claimed] == [
            ("msg_0", "a", 1),
            ("msg_2", "b", 1),
        ]
        assert await hooks.claim(NOW, 10, 20) == []  # leased
        a, b = claimed
        # a fails (retry in 5 s), b succeeds: b's next comes up, a's next still waits.
        disabled = await hooks.settle([b], [(a, NOW + timedelta(seconds=5))], [], NOW, 86400)
        assert disabled == []
        assert [m.id for m in await hooks.claim(NOW, 10, 20)] == ["msg_4"]
        later = NOW + timedelta(seconds=6)
        [again] = await hooks.claim(later, 10, 20)
        assert (again.id, again.attempts) == ("msg_0", 2)  # the same webhook-id, retried
        endpoint = await hooks.get("h")
        assert endpoint is not None and endpoint.failing_since is None  # b succeeded
        # Failing with no success since `later`: disabled once a day has passed.
        assert await hooks.settle([], [(again, later)], [], later, 86400) == []
        endpoint = await hooks.get("h")
        assert endpoint is not None and endpoint.failing_since == later
        [again] = await hooks.claim(later, 10, 20)
        day = later + timedelta(days=1, seconds=1)
        assert await hooks.settle([], [(again, day)], [], day, 86400) == ["h"]
        endpoint = await hooks.get("h")
        assert endpoint is not None and endpoint.disabled_at is not None
        assert not endpoint.wants("user.connected", None)
        # A PUT enables it again and keeps the secret.
        back, created = await hooks.put("h", "https://a.io/y", ["user.connected"], None, "new", NOW)
        assert not created and back.disabled_at is None and back.secret == "whsec_AAAA"
        assert isinstance(again, Message)
    finally:
        await store.close()


def test_webhook_outbox_order_retry_and_disable_on_sqlite(tmp_path: Path) -> None:
    asyncio.run(webhook_rooms(f"sqlite:///{tmp_path / 'w.db'}"))


def test_webhook_outbox_order_retry_and_disable_on_postgres(pg_url: str) -> None:
    asyncio.run(webhook_rooms(pg_url))


@pytest.mark.parametrize("users", [[], ["u1"]])
def test_cancel_in_the_store(tmp_path: Path, users: list[str]) -> None:
    async def run() -> None:
        store = SQLStore(f"sqlite:///{tmp_path / 'x.db'}")
        await store.connect()
        try:
            body = {"users": ["u1", "u2"], "title": "t"}
            await store.schedule("01CANCEL000000000000000000", body, NOW, None, "k", NOW)
            assert await store.cancel("k", users, NOW) == 1  # a whole publish, or one user
            left = await store.release_due(NOW + timedelta(seconds=1), draft_of)
            assert [r.recipients for r in left] == ([1] if users else [])
        finally:
            await store.close()

    asyncio.run(run())


def test_which_endpoints_a_change_writes_rows_for() -> None:
    def endpoint(name: str, events: list[str], types: list[str] | None) -> Endpoint:
        return Endpoint(name, "https://a.io/" + name, events, types, "whsec_AAAA", NOW)

    hooks = Hooks(
        (
            endpoint("comments", ["notification.read"], ["comment"]),
            endpoint("all", ["notification.read", "notification.recalled"], None),
        )
    )
    read = change_events("alice", "read", ["N1"])
    assert [(e.name, e.user, e.data) for e in read] == [
        ("notification.read", "alice", {"user": "alice", "id": "N1"})
    ]
    rows = outbox_rows(read, hooks, {"N1": "comment"}, NOW)
    assert [r["webhook"] for r in rows] == ["comments", "all"]
    assert orjson.loads(rows[0]["payload"])["data"]["type"] == "comment"
    assert [r["webhook"] for r in outbox_rows(read, hooks, {"N1": "deploy"}, NOW)] == ["all"]
    everything = change_events("alice", "read_all", [])
    assert everything[0].data == {"user": "alice", "all": True}
    assert change_events("alice", "unread", ["N1"]) == []
    assert not NO_HOOKS.wants("notification.read") and hooks.by_type


def test_a_broadcast_counts_each_user_once_over_node_batches() -> None:
    node_a = hashes(["alice", "bob", "alice"])  # alice's two tabs on one node
    node_b = hashes(["alice"])  # and her third on another
    assert len(node_a) == 16
    assert len(split(node_a) | split(node_b)) == 2
    assert user_hash("alice") in split(node_b)
