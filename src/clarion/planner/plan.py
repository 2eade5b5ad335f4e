"""A batch of drafts planned: who gets what now, in which streams at which seqs, with which
bytes, and every row the store writes for it. Pure: `now` and the loaded facts are arguments.

Shared streams take precedence over personal copies, and earlier (sorted) shared streams over
later ones: each copy names those above it in `also`, in its event and its route, so a session
(`Session.wants`) and the inbox (`inbox.shown`) show a notification once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypedDict, TypeVar

import orjson

from clarion.domain import Draft, Meta, Published, StoredEvent
from clarion.events import notification_event
from clarion.planner.collapse import Collapse, collapse
from clarion.planner.escalate import EscalationRow, escalations, templated
from clarion.planner.facts import Facts
from clarion.planner.fatigue import DigestItem, Route, Throttle, route
from clarion.planner.push import PushRow, pushes
from clarion.streams import user_stream

HIDDEN = 2  # `irregular` of a route written collapsed: counted by bucket (store/holes.py)


class NotificationRow(TypedDict):
    id: str
    type: str
    priority: str
    collapse_key: str | None
    doc: bytes
    created_at: datetime
    expires_at: datetime | None
    publisher: str | None


class EventRow(TypedDict):
    stream: str
    seq: int
    kind: str
    notification_id: str
    payload: bytes
    created_at: datetime
    expires_at: datetime | None


class RouteRow(TypedDict):
    stream: str
    seq: int
    notification_id: str
    type: str
    n: int
    tn: int | None
    expires_at: datetime | None
    replaced: bool
    also: bytes | None
    collapsed: int
    irregular: int
    collapse_key: str | None  # while it can still be collapsed


class IdempotencyRow(TypedDict):
    key: str
    notification_id: str
    result: bytes
    created_at: datetime


@dataclass(slots=True)
class Plan:
    """What to write, in one transaction, and what to answer and hand to the broker after."""

    results: list[Published]  # per draft, in order
    heads: dict[str, tuple[int, int]] = field(default_factory=dict)  # new (seq, routes)
    type_heads: dict[tuple[str, str], int] = field(default_factory=dict)
    notifications: list[NotificationRow] = field(default_factory=list)
    events: list[EventRow] = field(default_factory=list)
    routes: list[RouteRow] = field(default_factory=list)
    idempotency: list[IdempotencyRow] = field(default_factory=list)
    throttles: list[Throttle] = field(default_factory=list)
    held: list[DigestItem] = field(default_factory=list)
    pushes: list[PushRow] = field(default_factory=list)
    escalations: list[EscalationRow] = field(default_factory=list)  # planner/escalate.py
    replaced: Collapse = field(default_factory=Collapse)

    @property
    def published(self) -> list[StoredEvent]:
        """The committed events, in order, for the broker."""
        return [e for r in self.results for e in r.events]


@dataclass(slots=True)
class Decided:
    """A batch decided but not numbered yet: who gets each draft now, and so how many seqs
    each stream takes (`streams`, `typed`). The store advances the heads by these counts in
    one statement, which locks the rows, and `number` writes the seqs in from the old heads."""

    drafts: Sequence[Draft]
    facts: Facts
    now: datetime
    results: dict[int, Published]
    fresh: list[tuple[int, Draft]]
    repeats: dict[int, int]
    routes: list[Route]
    out: Plan
    streams: dict[str, int] = field(default_factory=dict)  # stream: seqs (and routes) taken
    typed: dict[tuple[str, str], int] = field(default_factory=dict)  # (shared stream, type)


def plan(drafts: Sequence[Draft], facts: Facts, now: datetime) -> Plan:
    """Plan a batch, numbering from `facts.heads`. A draft whose idempotency key was published
    before (or earlier in this batch) is answered as a replay and writes nothing."""
    return number(decide(drafts, facts, now), facts.heads, facts.type_heads)


def decide(drafts: Sequence[Draft], facts: Facts, now: datetime) -> Decided:
    """Everything about a batch that does not depend on the stream heads (`facts.heads` is
    not read): replays, fatigue, collapse, and the seqs each stream needs."""
    results: dict[int, Published] = {}
    fresh: list[tuple[int, Draft]] = []
    first: dict[str, int] = {}
    repeats: dict[int, int] = {}
    for i, d in enumerate(drafts):
        key = d.idempotency_key
        if key and key in facts.prior:
            p = facts.prior[key]
            results[i] = Published(p.id, [], p.recipients, True, list(p.streams))
            results[i].conflict = p.body is not None and p.body != d.fingerprint
        elif key and key in first:
            repeats[i] = first[key]
        else:
            if key:
                first[key] = i
            fresh.append((i, d))
    fresh = [(i, templated(d, facts.types)) for i, d in fresh]  # in_app templates (#14)
    out = Plan([])
    todo = [d for _, d in fresh]
    fatigue = route(todo, facts, now)
    out.throttles, out.held = fatigue.throttles, fatigue.held
    out.replaced = collapse(todo, fatigue.routes, facts)
    made = Decided(drafts, facts, now, results, fresh, repeats, fatigue.routes, out)
    for (_, d), r in zip(fresh, fatigue.routes, strict=True):
        for name in [*(user_stream(u) for u in r.users), *d.shared]:
            made.streams[name] = made.streams.get(name, 0) + 1
        for name in d.shared:
            made.typed[(name, d.type)] = made.typed.get((name, d.type), 0) + 1
    return made


def number(
    decided: Decided,
    heads: Mapping[str, tuple[int, int]],
    type_heads: Mapping[tuple[str, str], int],
) -> Plan:
    """Number a decided batch from the heads before it (stream: (seq, routes); (shared
    stream, type): routes) and encode its events: the plan to write."""
    drafts, facts, now, out = decided.drafts, decided.facts, decided.now, decided.out
    results, fresh, repeats = decided.results, decided.fresh, decided.repeats
    seqs = _Counter({n: h[0] for n, h in heads.items()})
    ns = _Counter({n: h[1] for n, h in heads.items()})
    tns = _Counter[tuple[str, str]](dict(type_heads))
    for (i, d), r in zip(fresh, decided.routes, strict=True):
        shared = sorted(d.shared)
        at = {name: seqs.take(name) for name in shared}
        stored: list[StoredEvent] = []
        for user in r.users:
            name = user_stream(user)
            stored.append(_copy(out, d, r, name, seqs.take(name), user, at, ns.take(name), None))
        for rank, name in enumerate(shared):
            above = {s: at[s] for s in shared[:rank]}
            tn = tns.take((name, d.type))
            stored.append(_copy(out, d, r, name, at[name], None, above, ns.take(name), tn))
        out.notifications.append(
            NotificationRow(
                id=d.id,
                type=d.type,
                priority=d.priority,
                collapse_key=d.collapse_key,
                doc=d.doc,
                created_at=d.created_at,
                expires_at=d.expires_at,
                publisher=d.publisher,
            )
        )
        streams = [user_stream(u) for u in r.users] + d.shared
        results[i] = Published(d.id, stored, len(r.users), False, streams, r.held, r.skipped)
        if d.idempotency_key:
            doc = {
                "id": d.id,
                "recipients": len(r.users),
                "streams": streams,
                "body": d.fingerprint,  # a reuse of the key with another body is a conflict
            }
            out.idempotency.append(
                IdempotencyRow(
                    key=d.idempotency_key,
                    notification_id=d.id,
                    result=orjson.dumps(doc),
                    created_at=d.created_at,
                )
            )
    out.pushes = pushes(
        [(d, r.users) for (_, d), r in zip(fresh, decided.routes, strict=True)], facts, now
    )
    out.escalations = escalations([d for _, d in fresh], facts.types)
    for j, i in repeats.items():
        done = results[i]
        results[j] = Published(done.id, [], done.recipients, True, done.replayed_streams)
        results[j].conflict = drafts[j].fingerprint != drafts[i].fingerprint
    out.results = [results[i] for i in range(len(drafts))]
    out.heads = {n: (seqs.taken[n], ns.taken[n]) for n in seqs.taken}
    out.type_heads = dict(tns.taken)
    return out


def _copy(
    out: Plan,
    d: Draft,
    r: Route,
    stream: str,
    seq: int,
    user: str | None,
    also: dict[str, int],
    n: int,
    tn: int | None,
) -> StoredEvent:
    """One copy of a notification: its event (bytes and metadata), its event row and route."""
    replaces, collapsed = r.replaced.get(user, ([], 0))
    payload = notification_event(
        stream, seq, d.doc, also=also, replaces=replaces, collapsed=collapsed
    )
    replaced = r.replaced_by.get(user) is not None
    out.events.append(
        EventRow(
            stream=stream,
            seq=seq,
            kind="notification",
            notification_id=d.id,
            payload=payload,
            created_at=d.created_at,
            expires_at=d.expires_at,
        )
    )
    out.routes.append(
        RouteRow(
            stream=stream,
            seq=seq,
            notification_id=d.id,
            type=d.type,
            n=n,
            tn=tn,
            expires_at=d.expires_at,
            replaced=replaced,
            also=orjson.dumps(also) if also else None,
            collapsed=collapsed,
            irregular=HIDDEN if replaced else int(bool(also)),
            collapse_key=None if replaced else d.collapse_key,
        )
    )
    meta = Meta("notification", d.type, also or None, accepted=d.created_at.timestamp())
    return StoredEvent(stream, seq, payload, meta)


K = TypeVar("K")


class _Counter(Generic[K]):
    """Numbers handed out per key, after the loaded heads (gap-free, in batch order)."""

    def __init__(self, heads: dict[K, int]) -> None:
        self.heads = heads
        self.taken: dict[K, int] = {}

    def take(self, key: K) -> int:
        n = self.taken.get(key)
        n = (self.heads.get(key, 0) if n is None else n) + 1
        self.taken[key] = n
        return n
