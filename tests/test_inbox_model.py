"""The inbox against a brute-force model: after any interleaving of publishes (personal, topics,
`all`, collapse keys, expired and expiring ones), follows and unfollows, mutes, mark read /
unread / archive, read-all, archive-all, a clock moving past expiries, the expiry sweep and
retention, the unread count and every page of every filter equal what the model computes by
looking at each notification.

The store under test is the real one (SQLite, and PostgreSQL), driven in-process; the model
knows nothing of routes' ordinals, watermarks or marks, so it checks that arithmetic.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from clarion.domain import Draft, NotFound, iso
from clarion.events import notification_doc
from clarion.ids import new_id
from clarion.inbox import PagePosition
from clarion.store import SQLStore, holes
from harness.services import postgres_database

TYPES = ("message", "alert")
FILTERS = ("all", "unread", "archived")


@dataclass
class Note:
    id: str
    type: str
    key: str | None
    expires: datetime | None
    routes: dict[str, int]  # stream -> seq, for the streams the user may see
    replaced: set[str] = field(default_factory=set)  # streams whose route was collapsed
    read: bool = False
    archived: bool = False
    gone: bool = False  # removed by retention
    created: datetime = field(default_factory=lambda: datetime.now(UTC))


class Model:
    """What the user's inbox must show, decided notification by notification."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.personal = "user:" + user
        self.notes: dict[str, Note] = {}
        self.follows: dict[str, tuple[int, int | None]] = {}
        self.muted: set[str] = set()
        self.now = datetime.now(UTC)  # the store's clock too (`stepped_clock`)

    def entitled(self, stream: str, seq: int) -> bool:
        if stream == self.personal:
            return True
        if stream not in self.follows:
            return False
        since, until = self.follows[stream]
        return since < seq and (until is None or seq <= until)

    def primary(self, note: Note) -> str | None:
        shared = sorted(s for s in note.routes if s != self.personal)
        order = [*shared, self.personal]
        return next(
            (s for s in order if s in note.routes and self.entitled(s, note.routes[s])), None
        )

    def visible(self, note: Note) -> bool:
        stream = self.primary(note)
        if stream is None or note.gone or stream in note.replaced:
            return False
        if note.expires is not None and note.expires <= self.now:
            return False
        return stream == self.personal or note.type not in self.muted

    def listing(self, filter: str) -> list[str]:
        def fits(n: Note) -> bool:
            if filter == "archived":
                return n.archived
            if filter == "unread":
                return not n.read and not n.archived
            return not n.archived

        shown = [n for n in self.notes.values() if self.visible(n) and fits(n)]
        return sorted((n.id for n in shown), reverse=True)

    def unread(self) -> int:
        return len(self.listing("unread"))

    def all_entitled(self) -> list[Note]:
        return [n for n in self.notes.values() if self.primary(n) is not None]


step = st.one_of(
    st.tuples(
        st.just("publish"),
        st.sets(st.sampled_from(["me", "other", "all", "a", "b"]), min_size=1),
        st.sampled_from(TYPES),
        st.sampled_from([None, None, "k"]),
        st.sampled_from(["never", "never", "never", "past", "soon", "later"]),
    ),
    st.tuples(st.just("follow"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("unfollow"), st.sampled_from(["a", "b"])),
    st.tuples(st.just("mute"), st.sampled_from(TYPES), st.booleans()),
    st.tuples(st.sampled_from(["read", "unread", "archived"]), st.integers(0, 50)),
    st.tuples(st.sampled_from(["read_all", "archive_all"])),
    st.tuples(st.just("purge_expired")),
    st.tuples(st.just("tick")),  # the clock moves an hour: "soon" ones expire, then "later"
    st.tuples(st.just("sweep")),
    st.tuples(st.just("purge_before"), st.integers(0, 50)),
)


@contextmanager
def stepped_clock(model: Model) -> Iterator[None]:
    """The inbox's reads (counts, pages, state changes) see the model's clock."""
    with mock.patch("clarion.store.inbox.utcnow", lambda: model.now):
        yield


async def run(url: str, steps: list[tuple[Any, ...]], limits: list[int], every: int = 1) -> None:
    store = SQLStore(url)
    await store.connect()
    try:
        await check(store, steps, limits, every)
        await totals_match_buckets(store)
    finally:
        await store.close()


async def totals_match_buckets(store: SQLStore) -> None:
    """`hole_totals` is `hole_buckets` summed over the types, bucket by bucket (store/holes.py):
    kept so by every write that hides routes, and by retention dropping buckets."""
    async with store.db.read() as conn:
        totals = (await conn.execute(text("SELECT stream, bucket, n FROM hole_totals"))).all()
        typed = (await conn.execute(text("SELECT stream, bucket, n FROM hole_buckets"))).all()
    summed: dict[tuple[str, int], int] = {}
    for stream, bucket, n in typed:
        summed[(stream, bucket)] = summed.get((stream, bucket), 0) + n
    assert {(s, b): n for s, b, n in totals} == summed


async def check(
    store: SQLStore, steps: list[tuple[Any, ...]], limits: list[int], every: int
) -> None:
    """Run the steps on the store and the model; compare the count after every `every` steps
    (and after each state change), and every page of every filter at the end."""
    tag = secrets.token_hex(4)
    model = Model(f"me-{tag}")
    with stepped_clock(model):
        await steps_and_pages(store, model, steps, limits, every, tag)


async def steps_and_pages(
    store: SQLStore,
    model: Model,
    steps: list[tuple[Any, ...]],
    limits: list[int],
    every: int,
    tag: str,
) -> None:
    me, other = model.user, f"other-{tag}"
    topics = {"a": f"topic:a-{tag}", "b": f"topic:b-{tag}"}
    await store.follow([me], "all", grant=True)
    model.follows["all"] = ((await store.heads(["all"]))["all"], None)
    clock = datetime.now(UTC) - timedelta(days=1)
    for at, s in enumerate(steps):
        kind = s[0]
        if kind == "publish":
            _, audience, type, key, expiry = s
            clock += timedelta(seconds=1)
            nid = new_id()
            expires = {
                "never": None,
                "past": model.now - timedelta(hours=1),
                "soon": model.now + timedelta(hours=1),
                "later": model.now + timedelta(hours=2),
            }[expiry]
            users = [u for u, name in ((me, "me"), (other, "other")) if name in audience]
            shared = (["all"] if "all" in audience else []) + [
                topics[t] for t in ("a", "b") if t in audience
            ]
            doc = notification_doc(
                nid, iso(clock), type=type, priority="normal", title="t", expires_at=iso(expires)
            )
            draft = Draft(
                id=nid,
                type=type,
                priority="normal",
                doc=doc,
                created_at=clock,
                expires_at=expires,
                collapse_key=key,
                users=users,
                shared=shared,
            )
            (published,) = await store.publish([draft])
            mine = {
                e.stream: e.seq
                for e in published.events
                if e.stream in (model.personal, "all", *topics.values())
            }
            if key is not None:  # collapse, as the model sees it
                for old in model.notes.values():
                    if old.key != key or old.gone:
                        continue
                    if (
                        model.personal in mine
                        and model.personal in old.routes
                        and model.personal not in old.replaced
                        and not old.read
                        and not old.archived
                    ):
                        old.replaced.add(model.personal)
                    if any(st in old.routes and st not in old.replaced for st in shared):
                        old.replaced |= {st for st in old.routes if st != model.personal}
            model.notes[nid] = Note(nid, type, key, expires, mine, created=clock)
        elif kind in ("follow", "unfollow"):
            stream = topics[s[1]]
            head = (await store.heads([stream]))[stream]
            if kind == "follow":
                await store.follow([me], stream, grant=True)
                if stream not in model.follows or model.follows[stream][1] is not None:
                    model.follows[stream] = (head, None)
            else:
                await store.unfollow([me], stream, revoke=False)
                if stream in model.follows and model.follows[stream][1] is None:
                    model.follows[stream] = (model.follows[stream][0], head)
        elif kind == "mute":
            _, type, mute = s
            await store.put_preferences(me, {type: (False if mute else None, None)}, None)
            (model.muted.add if mute else model.muted.discard)(type)
        elif kind in ("read", "unread", "archived"):
            ids = sorted(model.notes)
            if not ids:
                continue
            note = model.notes[ids[s[1] % len(ids)]]
            try:
                changed = await store.change_state(me, kind, note.id)
            except NotFound:
                assert not model.visible(note), f"{kind} {note.id}: visible but NotFound"
                continue
            assert model.visible(note), f"{kind} {note.id}: not visible but changed"
            if kind == "archived":
                note.archived = True
            else:
                note.read = kind == "read"
            assert changed.unread == model.unread(), f"{kind} {note.id}: the count it answered"
        elif kind in ("read_all", "archive_all"):
            changed = await store.change_state(me, kind, None)
            for note in model.all_entitled():
                if kind == "read_all":
                    note.read = True
                else:
                    note.archived = True
            assert changed.unread == model.unread()
        elif kind == "purge_expired":
            while await store.purge(None, model.now):
                pass
        elif kind == "tick":
            model.now += timedelta(hours=1)
        elif kind == "sweep":
            while await store.expire(model.now):
                pass
        elif kind == "purge_before":
            dated = sorted(model.notes.values(), key=lambda n: n.created)
            if not dated:
                continue
            cut = dated[s[1] % len(dated)].created
            while await store.purge(cut, model.now):
                pass
            for note in dated:
                if note.created < cut:
                    note.gone = True
        if at % every and at != len(steps) - 1:
            continue
        count = await store.unread_count(me)
        assert isinstance(count, int) and count == model.unread(), f"after {s}: {count!r}"
    for i, filter in enumerate(FILTERS):
        limit = limits[i % len(limits)]
        got: list[str] = []
        position = PagePosition()
        while True:
            page = await store.list_inbox(me, filter, limit, position)  # type: ignore[arg-type]
            assert len(page.items) <= limit
            assert page.unread == model.unread()
            got += [item["id"] for item in page.items]
            if page.next_cursor is None:
                break
            assert len(page.items) == limit
            position = PagePosition.decode(page.next_cursor)
        assert got == model.listing(filter), filter


P = "publish"


def interleavings(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Up to 40 steps and up to 3 page sizes, `examples` of them (hypothesis)."""

    def wrap(test: Callable[..., None]) -> Callable[..., None]:
        return settings(  # type: ignore[no-any-return]
            max_examples=examples,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
        )(
            given(
                steps=st.lists(step, min_size=1, max_size=40),
                limits=st.lists(st.integers(1, 5), min_size=1, max_size=3),
            )(test)
        )

    return wrap


@example(steps=[(P, {"all"}, "message", None, "never"), ("read_all",), ("unread", 0)], limits=[1])
@example(steps=[(P, {"me"}, "message", None, "never"), ("read_all",), ("unread", 0)], limits=[2])
@example(
    steps=[
        (P, {"me", "all"}, "alert", "k", "never"),
        ("read", 0),
        (P, {"me"}, "alert", "k", "soon"),
        (P, {"all", "a"}, "message", "k", "never"),
        ("follow", "a"),
        (P, {"a", "all"}, "message", None, "past"),
        ("mute", "message", True),
        ("archive_all",),
        (P, {"a", "me"}, "message", None, "never"),
        ("purge_expired",),
        ("unread", 1),
        ("purge_before", 1),
    ],
    limits=[1, 3],
)
@example(  # expiring routes counted as they expire, before and after the sweep hides them
    steps=[
        (P, {"all", "a"}, "message", None, "soon"),
        ("follow", "a"),
        (P, {"me", "all"}, "alert", None, "later"),
        (P, {"a"}, "message", None, "soon"),
        (P, {"me"}, "message", None, "soon"),
        ("read", 3),
        ("tick",),
        ("unread", 3),
        (P, {"all"}, "alert", None, "soon"),
        ("sweep",),
        ("mute", "alert", True),
        ("tick",),
        ("archived", 1),
        ("read_all",),
        ("unread", 0),
        ("tick",),
        ("sweep",),
        ("purge_before", 2),
    ],
    limits=[1, 2],
)
@interleavings(60)
def test_counts_and_pages_match_a_brute_force_model(
    sql_url: str, steps: list[tuple[Any, ...]], limits: list[int]
) -> None:
    asyncio.run(run(sql_url, steps, limits))


def history(
    size: int, expire_every: int, shared_every: int, at: dict[int, tuple[Any, ...]]
) -> list[tuple[Any, ...]]:
    """`size` notifications to `all` (every `shared_every`th to topic `a` too), collapsed every
    7th and expired every `expire_every`th, with the steps of `at` after those indexes."""
    steps: list[tuple[Any, ...]] = [("follow", "a")]
    for i in range(size):
        key = "k" if i % 7 == 0 else None
        expiry = "past" if i % expire_every == 0 else "never"
        audience = {"all", "a"} if i % shared_every == 0 else {"all"}
        steps.append((P, audience, TYPES[i % 2], key, expiry))
        if i in at:
            steps.append(at[i])
    return steps


def long_history() -> list[tuple[Any, ...]]:
    """Over 2,000 seqs on `all` (whole hole buckets of 1,024 between partial ones), with routes
    collapsed and expired throughout, a read-all, a mute and retention in between."""
    at = {400: ("read_all",), 1_500: ("mute", "alert", True), 1_900: ("purge_before", 300)}
    return history(2_200, 53, 97, at)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_counts_across_hole_buckets(sql_url: str) -> None:
    asyncio.run(run(sql_url, long_history(), [7], every=250))


@example(  # every route of a stream deleted by retention: the bucket of the last one stays
    steps=[
        (P, {"me"}, "message", None, "never"),
        (P, {"other"}, "message", None, "never"),
        ("follow", "a"),
        ("follow", "b"),
        ("purge_before", 1),
    ],
    limits=[1],
)
@interleavings(40)
def test_counts_over_tiny_hole_buckets_match_the_model(
    tiny_url: str, steps: list[tuple[Any, ...]], limits: list[int]
) -> None:
    """The same with fine buckets of 2 seqs and coarse ones of 4 (store/holes.py): a history
    of 40 steps then spans many buckets of both sizes, so every count sums whole coarse and
    fine buckets and scans partial ones, through hiding, retention and mutes."""
    with mock.patch.object(holes, "BUCKET_BITS", 1), mock.patch.object(holes, "COARSE_BITS", 1):
        asyncio.run(run(tiny_url, steps, limits))


@pytest.fixture(params=["sqlite", "postgres"])
def tiny_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database of the test's own: buckets of another size than the module's other tests
    write would be misread by them (a shared `all` stream's hole buckets)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'tiny.db'}"
    else:
        with postgres_database() as url:
            yield url


def short_history() -> list[tuple[Any, ...]]:
    """`long_history`'s pattern over 300 seqs, for buckets of 2 and 8 seqs: hidden routes
    (collapsed every 7th, expired every 13th) in most buckets of both sizes."""
    at = {60: ("read_all",), 150: ("sweep",), 200: ("mute", "alert", True)}
    return history(300, 13, 17, at | {250: ("purge_before", 40)})


def test_counts_over_tiny_hole_buckets_across_a_history(tiny_url: str) -> None:
    with mock.patch.object(holes, "BUCKET_BITS", 1), mock.patch.object(holes, "COARSE_BITS", 2):
        asyncio.run(run(tiny_url, short_history(), [7], every=10))
