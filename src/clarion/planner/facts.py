"""What the planner reads: the facts the store loads for a batch of drafts, and which ones a
batch needs (`wants`), so the loader asks only for those. No I/O here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from clarion import preferences as rules
from clarion.domain import Draft, TypeSettings, UserPreferences
from clarion.inbox import Mark, View
from clarion.streams import user_stream

PUSHED = frozenset({"high", "critical"})  # priorities sent by Web Push (docs/audiences.md)

Pair = tuple[str, str]  # (user, type)


@dataclass(frozen=True, slots=True)
class Prior:
    """What an idempotency key's first publish answered."""

    id: str
    recipients: int
    streams: list[str]
    body: str | None = None  # the first request's fingerprint (None: written before them)


@dataclass(frozen=True, slots=True)
class Collapsible:
    """An earlier route of a notification with a collapse key, on a named user's stream, not
    replaced yet, with what decides whether the user has read it."""

    key: str
    user: str
    seq: int
    id: str
    type: str
    collapsed: int  # how many notifications it stood for, itself excluded
    view: View  # the user's watermarks on its personal stream
    mark: Mark | None

    @property
    def stream(self) -> str:
        return user_stream(self.user)


@dataclass(frozen=True, slots=True)
class SharedCollapsible:
    """An earlier route of a notification with a collapse key on a shared stream (collapsed there
    for everyone, read or not)."""

    key: str
    stream: str
    id: str
    collapsed: int


@dataclass(slots=True)
class Subscriber:
    """A named user with Web Push subscriptions: the subscriptions, the user's `push` choices
    by type, and quiet hours."""

    subscriptions: list[str]
    push: dict[str, bool] = field(default_factory=dict)
    prefs: UserPreferences = field(default_factory=UserPreferences)


@dataclass(slots=True)
class Facts:
    """Everything a batch's decisions depend on, read in the writing transaction."""

    types: Mapping[str, TypeSettings] = field(default_factory=dict)
    prior: Mapping[str, Prior] = field(default_factory=dict)  # idempotency key: first answer
    heads: Mapping[str, tuple[int, int]] = field(default_factory=dict)  # stream: (seq, routes)
    type_heads: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (stream, type)
    choices: Mapping[Pair, bool] = field(default_factory=dict)  # the users' in-app choices
    throttles: Mapping[Pair, tuple[datetime, int]] = field(default_factory=dict)  # window, count
    digests: Mapping[Pair, datetime] = field(default_factory=dict)  # open windows: when due
    collapsible: Sequence[Collapsible] = ()
    collapsible_shared: Sequence[SharedCollapsible] = ()
    subscribers: Mapping[str, Subscriber] = field(default_factory=dict)


@dataclass(slots=True)
class Wants:
    """The facts a batch needs, so a batch without rules costs no query for them."""

    streams: list[str]  # sorted: their rows are locked in this order
    typed: list[tuple[str, str]]  # (shared stream, type), sorted
    choices: tuple[list[str], list[str]]  # (users, types) whose in-app choices count
    throttles: list[Pair]
    digests: list[Pair]
    collapse: dict[str, list[str]]  # collapse key: named users
    collapse_shared: dict[str, list[str]]  # collapse key: shared streams
    push: tuple[list[str], list[str]]  # (users, types) who may be pushed to


def wants(drafts: Sequence[Draft], types: Mapping[str, TypeSettings]) -> Wants:
    """What to load for `drafts` (replays included: a superset costs nothing wrong)."""
    streams: set[str] = set()
    typed: set[tuple[str, str]] = set()
    choice_users: set[str] = set()
    choice_types: set[str] = set()
    throttled: set[Pair] = set()
    held: set[Pair] = set()
    collapse: dict[str, set[str]] = {}
    collapse_shared: dict[str, set[str]] = {}
    push_users: set[str] = set()
    push_types: set[str] = set()
    for d in drafts:
        rule = types.get(d.type, rules.DEFAULT)
        streams.update(user_stream(u) for u in d.users)
        streams.update(d.shared)
        typed.update((s, d.type) for s in d.shared)
        if d.users and not rule.mandatory:
            choice_users.update(d.users)
            choice_types.add(d.type)
        if d.priority != "critical" and d.digest and d.users:
            if rule.throttle_count:
                throttled.update((u, d.type) for u in d.users)
            if rule.throttle_count or (rule.digest_seconds and d.priority == "low"):
                held.update((u, d.type) for u in d.users)
        if d.collapse_key:
            collapse.setdefault(d.collapse_key, set()).update(d.users)
            collapse_shared.setdefault(d.collapse_key, set()).update(d.shared)
        if d.priority in PUSHED and d.users:
            push_users.update(d.users)
            push_types.add(d.type)
    return Wants(
        streams=sorted(streams),
        typed=sorted(typed),
        choices=(sorted(choice_users), sorted(choice_types)),
        throttles=sorted(throttled),
        digests=sorted(held),
        collapse={k: sorted(v) for k, v in collapse.items() if v},
        collapse_shared={k: sorted(v) for k, v in collapse_shared.items() if v},
        push=(sorted(push_users), sorted(push_types)),
    )
