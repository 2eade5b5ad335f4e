"""The publish planner, decided in memory with a fixed `now`: preferences, throttles, digests,
collapse, `also`, seqs and ordinals, idempotency and push queueing. No store, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import count
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion.domain import Draft, Meta, TypeSettings, UserPreferences
from clarion.events import notification_doc
from clarion.inbox import Mark, View
from clarion.planner import (
    Collapsible,
    Facts,
    Prior,
    SharedCollapsible,
    Subscriber,
    digest_draft,
    plan,
    summaries,
    wants,
)
from clarion.store import SQLStore, holes

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_ids = count(1)


def draft(
    users: list[str] | None = None,
    shared: list[str] | None = None,
    *,
    type: str = "message",
    priority: str = "normal",
    key: str | None = None,
    idem: str | None = None,
    expires: datetime | None = None,
) -> Draft:
    id = f"N{next(_ids):025d}"
    doc = notification_doc(id, "t", type=type, priority=priority, title=f"title {id}")
    return Draft(
        id=id,
        type=type,
        priority=priority,
        doc=doc,
        created_at=NOW,
        expires_at=expires,
        collapse_key=key,
        users=users or [],
        shared=shared or [],
        idempotency_key=idem,
    )


def rules(**types: dict[str, Any]) -> dict[str, TypeSettings]:
    return {t: TypeSettings(type=t, **v) for t, v in types.items()}


# -- preferences ------------------------------------------------------------------------------


def test_opted_out_users_are_skipped_and_mandatory_types_ignore_it() -> None:
    facts = Facts(
        types=rules(promo={"in_app": False}, alert={"mandatory": True}),
        choices={("a", "promo"): True, ("b", "message"): False, ("b", "alert"): False},
    )
    made = plan(
        [draft(["a", "b"], type="promo"), draft(["a", "b"]), draft(["b"], type="alert")],
        facts,
        NOW,
    )
    promo, message, alert = made.results
    assert (promo.recipients, promo.skipped) == (1, 1)  # b has the app's default: off
    assert (message.recipients, message.skipped) == (1, 1)  # b opted out
    assert (alert.recipients, alert.skipped) == (1, 0)  # mandatory
    assert [e.stream for e in message.events] == ["user:a"]


# -- throttles --------------------------------------------------------------------------------


def test_a_throttle_passes_count_per_window_holds_the_rest_until_it_ends() -> None:
    facts = Facts(types=rules(comment={"throttle_count": 2, "throttle_seconds": 6}))
    drafts = [draft(["a"], type="comment") for _ in range(5)]
    drafts.append(draft(["a"], type="comment", priority="critical"))
    made = plan(drafts, facts, NOW)
    assert [r.recipients for r in made.results] == [1, 1, 0, 0, 0, 1]
    assert [r.held for r in made.results] == [0, 0, 1, 1, 1, 0]
    end = NOW + timedelta(seconds=6)
    assert [(h["notification_id"], h["due_at"]) for h in made.held] == [
        (d.id, end) for d in drafts[2:5]
    ]
    [window] = made.throttles
    assert (window.start, window.count, window.new) == (NOW, 5, True)


def test_a_throttle_window_carries_over_batches_and_a_new_one_opens_when_it_ends() -> None:
    types = rules(comment={"throttle_count": 2, "throttle_seconds": 60})
    opened = NOW - timedelta(seconds=30)
    facts = Facts(types=types, throttles={("a", "comment"): (opened, 2)})
    made = plan([draft(["a"], type="comment")], facts, NOW)
    assert made.results[0].held == 1
    assert made.held[0]["due_at"] == opened + timedelta(seconds=60)
    assert (made.throttles[0].count, made.throttles[0].new) == (3, False)
    later = NOW + timedelta(seconds=31)  # the window ended: this one opens the next
    made = plan([draft(["a"], type="comment")], facts, later)
    assert made.results[0].recipients == 1
    assert (made.throttles[0].start, made.throttles[0].count) == (later, 1)


# -- digests ----------------------------------------------------------------------------------


def test_low_priority_waits_for_a_digest_window_that_later_items_join() -> None:
    facts = Facts(types=rules(like={"digest_seconds": 300}))
    first = plan([draft(["a", "b"], type="like", priority="low")], facts, NOW)
    assert (first.results[0].recipients, first.results[0].held) == (0, 2)
    due = NOW + timedelta(seconds=300)
    assert {(h["user_id"], h["due_at"]) for h in first.held} == {("a", due), ("b", due)}
    # A minute later the open window (loaded from the store) takes the next item.
    facts.digests = {("a", "like"): due}
    later = NOW + timedelta(seconds=60)
    made = plan(
        [draft(["a", "c"], type="like", priority="low"), draft(["a"], type="like")], facts, later
    )
    assert {(h["user_id"], h["due_at"]) for h in made.held} == {
        ("a", due),
        ("c", later + timedelta(seconds=300)),
    }
    assert made.results[1].recipients == 1  # normal priority is not held


def test_a_digest_summary_stands_for_its_items_oldest_first() -> None:
    docs = {
        f"N{i}": {"id": f"N{i}", "title": f"like {i}", "created_at": "t", "url": "/x"}
        for i in range(4)
    }
    taken = [("a", "like", "N2"), ("a", "like", "N0"), ("b", "like", "N3"), ("a", "like", "N9")]
    groups = summaries(taken, docs)
    assert [(u, [i["id"] for i in items]) for u, _, items in groups] == [
        ("a", ["N0", "N2"]),
        ("b", ["N3"]),
    ]
    summary = digest_draft("D1", "a", "like", groups[0][2], NOW)
    doc = orjson.loads(summary.doc)
    assert doc["title"] == "like 0 and 1 more" and doc["url"] is None
    assert doc["data"]["digest"]["count"] == 2
    assert (summary.users, summary.digest, summary.priority) == (["a"], False, "low")
    # A summary is never held itself, even for a digest type.
    made = plan([summary], Facts(types=rules(like={"digest_seconds": 60})), NOW)
    assert made.results[0].recipients == 1


# -- collapse ---------------------------------------------------------------------------------


def personal(key: str, user: str, seq: int, id: str, read: int = 0, **mark: Any) -> Collapsible:
    view = View("user:" + user, 0, seq, read, 0, NOW if read else None)
    return Collapsible(key, user, seq, id, "message", 1, view, Mark(id, **mark) if mark else None)


def test_collapse_replaces_the_unread_ones_only() -> None:
    facts = Facts(
        heads={"user:a": (10, 10)},
        collapsible=[
            personal("k", "a", 3, "OLD1"),
            personal("k", "a", 5, "OLD2", read=5),  # read by the watermark
            personal("k", "a", 7, "OLD3", unread=True, read_at=None),  # marked unread
            personal("k", "a", 8, "OLD4", read_at=NOW),
        ],
    )
    made = plan([draft(["a"], key="k")], facts, NOW)
    assert made.replaced.routes == [("user:a", 3, "message"), ("user:a", 7, "message")]
    payload = orjson.loads(made.results[0].events[0].payload)
    assert payload["replaces"] == ["OLD1", "OLD3"] and payload["collapsed"] == 4
    assert made.routes[0]["collapsed"] == 4


def test_collapse_within_a_batch_writes_the_earlier_already_replaced() -> None:
    facts = Facts(collapsible=[personal("k", "a", 1, "OLD")])
    one, two = draft(["a"], key="k"), draft(["a"], key="k")
    made = plan([one, two], facts, NOW)
    assert made.replaced.routes == [("user:a", 1, "message")]  # taken by the first, not again
    assert [r["replaced"] for r in made.routes] == [True, False]
    assert [r["irregular"] for r in made.routes] == [holes.HIDDEN, 0]  # counted by bucket
    assert [r["collapse_key"] for r in made.routes] == [None, "k"]  # a live candidate keeps it
    second = orjson.loads(made.results[1].events[0].payload)
    assert second["replaces"] == [one.id] and second["collapsed"] == 3


def test_collapse_on_shared_streams_replaces_for_everyone() -> None:
    facts = Facts(
        collapsible_shared=[
            SharedCollapsible("k", "topic:x", "OLD", 2),
            SharedCollapsible("k", "topic:other", "ELSEWHERE", 0),
        ]
    )
    made = plan(
        [draft(shared=["topic:x"], key="k"), draft(shared=["topic:x"], key="k")], facts, NOW
    )
    assert made.replaced.notifications == ["OLD"]
    first = orjson.loads(made.results[0].events[0].payload)
    assert (first["replaces"], first["collapsed"]) == (["OLD"], 3)


def test_held_users_collapse_nothing() -> None:
    facts = Facts(
        types=rules(like={"digest_seconds": 60}), collapsible=[personal("k", "a", 1, "OLD")]
    )
    made = plan([draft(["a"], type="like", priority="low", key="k")], facts, NOW)
    assert made.replaced.routes == [] and made.results[0].held == 1


# -- streams, seqs and also -------------------------------------------------------------------


def test_seqs_follow_the_heads_and_also_names_the_streams_that_take_precedence() -> None:
    facts = Facts(
        heads={"user:a": (4, 3), "role:x": (9, 9), "all": (1, 1)},
        type_heads={("role:x", "message"): 5},
    )
    made = plan([draft(["a", "b"], ["role:x", "all"])], facts, NOW)
    events = {e.stream: e for e in made.results[0].events}
    assert {s: e.seq for s, e in events.items()} == {
        "user:a": 5,
        "user:b": 1,
        "all": 2,
        "role:x": 10,
    }
    # `all` sorts first: it takes precedence over the role, and both over personal copies.
    # Each copy carries the draft's acceptance time: the hub times publish-to-socket with it.
    assert events["all"].meta == Meta("notification", "message", None, accepted=NOW.timestamp())
    assert events["role:x"].meta.also == {"all": 2}
    assert events["user:a"].meta.also == {"all": 2, "role:x": 10}
    assert orjson.loads(events["user:a"].payload)["also"] == {"all": 2, "role:x": 10}
    routes = {r["stream"]: r for r in made.routes}
    assert orjson.loads(routes["role:x"]["also"] or b"") == {"all": 2}
    assert routes["all"]["also"] is None and routes["all"]["irregular"] == 0
    assert (routes["user:a"]["n"], routes["role:x"]["n"], routes["role:x"]["tn"]) == (4, 10, 6)
    assert routes["user:a"]["tn"] is None
    assert made.heads == {"user:a": (5, 4), "user:b": (1, 1), "role:x": (10, 10), "all": (2, 2)}
    assert made.type_heads == {("role:x", "message"): 6, ("all", "message"): 1}


def test_an_expiring_route_is_regular_until_it_expires() -> None:
    """An expiry alone needs no look one by one: the ordinals count the route until it
    expires, the count subtracts it from then (ix_routes_expiring) until the sweep hides it."""
    made = plan([draft(["a"], expires=NOW + timedelta(hours=1))], Facts(), NOW)
    assert made.routes[0]["irregular"] == 0
    assert made.routes[0]["expires_at"] == NOW + timedelta(hours=1)


# -- idempotency ------------------------------------------------------------------------------


def test_a_replayed_key_writes_nothing_and_answers_the_first_result() -> None:
    facts = Facts(prior={"k1": Prior("FIRST", 2, ["user:a", "user:b"])})
    made = plan(
        [draft(["a"], idem="k1"), draft(["c"], idem="k2"), draft(["d"], idem="k2")], facts, NOW
    )
    replay, new, repeat = made.results
    assert (replay.id, replay.duplicate, replay.streams) == ("FIRST", True, ["user:a", "user:b"])
    assert not new.duplicate and (repeat.id, repeat.duplicate) == (new.id, True)
    assert [n["id"] for n in made.notifications] == [new.id]
    assert orjson.loads(made.idempotency[0]["result"]) == {
        "id": new.id,
        "recipients": 1,
        "streams": ["user:c"],
        "body": None,
    }


def test_a_key_reused_with_another_body_is_a_conflict() -> None:
    facts = Facts(prior={"k1": Prior("FIRST", 1, ["user:a"], body="one")})
    same, other, old = (draft(["a"], idem=k) for k in ("k1", "k1", "k2"))
    same.fingerprint, other.fingerprint = "one", "two"
    facts = Facts(prior={**facts.prior, "k2": Prior("OLD", 1, ["user:a"])})  # before fingerprints
    old.fingerprint = "three"
    made = plan([same, other, old], facts, NOW)
    assert [r.conflict for r in made.results] == [False, True, False]


# -- push -------------------------------------------------------------------------------------


def test_push_goes_to_subscribed_recipients_after_their_quiet_hours() -> None:
    quiet = UserPreferences("Europe/Paris", "12:00", "14:00")  # NOW is 13:00 in Paris
    facts = Facts(
        types=rules(like={"digest_seconds": 60}),
        subscribers={
            "a": Subscriber(["s1", "s2"]),
            "b": Subscriber(["s3"], prefs=quiet),
            "c": Subscriber(["s4"], push={"message": False}),
        },
    )
    made = plan(
        [
            draft(["a", "b", "c", "d"], priority="high"),
            draft(["b"], priority="critical"),
            draft(["a"]),  # normal: no push
            draft(["a"], type="like", priority="low"),
        ],
        facts,
        NOW,
    )
    got = [(p["subscription_id"], p["due_at"]) for p in made.pushes]
    assert got == [
        ("s1", NOW),
        ("s2", NOW),
        ("s3", datetime(2026, 3, 1, 13, 0, tzinfo=UTC)),  # 14:00 in Paris
        ("s3", NOW),  # critical ignores quiet hours
    ]


def test_wants_asks_only_for_what_rules_need() -> None:
    plain = wants([draft(["a"]), draft(shared=["all"])], {})
    assert (plain.throttles, plain.digests, plain.collapse, plain.push) == ([], [], {}, ([], []))
    assert plain.streams == ["all", "user:a"] and plain.typed == [("all", "message")]
    types = rules(c={"throttle_count": 1, "throttle_seconds": 5})
    need = wants([draft(["a"], type="c", key="k", priority="high")], types)
    assert need.throttles == need.digests == [("a", "c")]
    assert need.collapse == {"k": ["a"]} and need.push == (["a"], ["c"])


# -- properties -------------------------------------------------------------------------------

USERS = st.lists(st.sampled_from(["a", "b", "c"]), max_size=4)
SHARED = st.lists(st.sampled_from(["all", "role:x", "topic:t"]), max_size=2, unique=True)
DRAFTS = st.lists(
    st.tuples(
        USERS,
        SHARED,
        st.sampled_from(["low", "normal", "critical"]),
        st.sampled_from(["message", "comment", "like"]),
        st.sampled_from([None, "k"]),
    ),
    min_size=1,
    max_size=8,
)
HEADS = st.fixed_dictionaries(
    {s: st.integers(0, 50) for s in ["all", "role:x", "topic:t", "user:a", "user:b", "user:c"]}
)


@settings(max_examples=200, deadline=None)
@given(DRAFTS, HEADS, st.integers(0, 3))
def test_every_stream_numbers_its_events_gap_free_from_its_head(
    specs: list[tuple[list[str], list[str], str, str, str | None]],
    heads: dict[str, int],
    counted: int,
) -> None:
    types = rules(
        comment={"throttle_count": 1, "throttle_seconds": 10}, like={"digest_seconds": 30}
    )
    facts = Facts(
        types=types,
        heads={s: (h, h) for s, h in heads.items()},
        throttles={("a", "comment"): (NOW, counted)},
    )
    drafts = [draft(u, s, priority=p, type=t, key=k) for u, s, p, t, k in specs]
    made = plan(drafts, facts, NOW)
    by_stream: dict[str, list[int]] = {}
    for e in made.published:
        by_stream.setdefault(e.stream, []).append(e.seq)
    for stream, seqs in by_stream.items():
        assert seqs == list(range(heads[stream] + 1, heads[stream] + len(seqs) + 1))
        assert made.heads[stream] == (seqs[-1], seqs[-1])
    assert [(r["stream"], r["seq"]) for r in made.routes] == [
        (e.stream, e.seq) for e in made.published
    ]
    for d, result in zip(drafts, made.results, strict=True):
        named = len(set(d.users))
        assert result.recipients + result.held + result.skipped == named
        assert len(result.events) == result.recipients + len(d.shared)
        for e in result.events:
            assert e.meta.kind == "notification" and e.meta.type == d.type
            body = orjson.loads(e.payload)
            assert (body["stream"], body["seq"], body.get("also")) == (
                e.stream,
                e.seq,
                dict(e.meta.also) if e.meta.also else None,
            )
    assert len(made.held) == sum(r.held for r in made.results)


# -- through the real store -------------------------------------------------------------------


async def test_the_store_writes_the_plan_and_replays_each_event_with_its_metadata(
    tmp_path: Path,
) -> None:
    """What the hub gets live (the plan's events) is what a replay or a gap fill reads back:
    the same bytes and the same `Meta`, for notifications and for control events."""
    store = SQLStore(f"sqlite:///{tmp_path / 'clarion.db'}")
    await store.connect()
    try:
        live = [
            *(await store.follow(["a"], "topic:t", grant=True)),
            *[
                e
                for r in await store.publish([draft(["a", "b"], ["topic:t", "all"])])
                for e in r.events
            ],
            await store.put_preferences("a", {"chat": (False, None)}, None),
            *[e for r in await store.publish([draft(["a"], key="k")]) for e in r.events],
        ]
        assert [e.meta.kind for e in live] == [
            "follow",
            "notification",
            "notification",
            "notification",
            "notification",
            "preferences",
            "notification",
        ]
        assert live[0].meta == Meta("follow", topic="topic:t", at=0)
        assert live[5].meta == Meta("preferences", muted=("chat",))
        replayed = []
        for stream in ("user:a", "user:b", "topic:t", "all"):
            replayed += await store.events_after(stream, 0, 100)
        key = lambda e: (e.stream, e.seq)  # noqa: E731
        # All but the acceptance time, which only a live event carries (a replay is not
        # timed from publish to socket: hub.py).
        assert all(e.meta.accepted > 0 for e in live if e.meta.kind == "notification")
        untimed = [replace(e, meta=replace(e.meta, accepted=0.0)) for e in live]
        assert sorted(replayed, key=key) == sorted(untimed, key=key)
    finally:
        await store.close()
