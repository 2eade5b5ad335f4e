"""Inbox rules: what a user sees of the streams it follows, counted and paged from per-stream
facts. No I/O: the store loads the facts (store/inbox.py), these functions decide.

Every notification reaches a user by one or more *routes*: a row per stream it went to (the
user's personal stream, a topic, a role, `all`), numbered by that stream's gap-free seq. A user
*views* a stream over a seq range (personal: all of it; shared: from where following began to
where it ended) with two watermarks: every route at or below `read` is read and every route at or
below `archived` is archived, unless a per-notification *mark* says otherwise. Read-all and
archive-all move watermarks (one row per stream), so their cost does not depend on how much is
unread; marks exist only where the user acted on one notification.

The unread count is then arithmetic on ordinals (`n`: how many routes a stream has up to a seq):
the routes above a stream's watermarks, less those of muted types (per-type ordinals), less the
few *irregular* routes that are not shown although counted (expired, collapsed away, or a second
route to a notification the user gets by a route that takes precedence), corrected by the
user's marks. Regular routes, the vast majority, are never looked at one by one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Protocol

from clarion.domain import Filter
from clarion.streams import checked_position, decode_token, encode_token

MAX_PAGE_CURSOR = 8192
ID = re.compile(r"[0-9A-Z]{1,26}")


@dataclass(frozen=True, slots=True)
class View:
    """One stream as one user sees it."""

    stream: str
    lo: int  # routes with seq > lo ...
    hi: int  # ... and seq <= hi are the user's (personal: 0 .. head)
    read: int = 0  # watermark: routes with seq <= read are read unless marked unread
    archived: int = 0  # watermark: routes with seq <= archived are archived
    read_at: datetime | None = None  # when the read watermark was set (shown as read_at)
    archived_at: datetime | None = None
    muted: frozenset[str] = frozenset()  # types the user does not see on this stream
    seen: int = 0  # watermark: routes with seq <= seen were shown in an open inbox (seen-all)

    def has(self, seq: int) -> bool:
        return self.lo < seq <= self.hi

    @property
    def unread_from(self) -> int:
        """Routes above this seq are unread unless marked (the counted window's start)."""
        return max(self.lo, self.read, self.archived)

    def window(self, filter: Filter) -> tuple[int, int]:
        """The seq range (exclusive, inclusive] whose routes the filter takes by default."""
        if filter == "unread":
            return self.unread_from, self.hi
        if filter == "archived":
            return self.lo, min(self.hi, max(self.lo, self.archived))
        return max(self.lo, self.archived), self.hi


@dataclass(frozen=True, slots=True)
class Route:
    """A notification's row in one stream."""

    stream: str
    seq: int
    id: str
    type: str
    expires_at: datetime | None = None
    replaced: bool = False  # collapsed into a newer notification
    also: Mapping[str, int] = field(default_factory=dict)  # routes that take precedence


@dataclass(frozen=True, slots=True)
class Mark:
    """A user's own state for one notification, where it differs from the watermarks."""

    id: str
    read_at: datetime | None = None
    unread: bool = False  # marked unread: overrides the read watermark
    archived_at: datetime | None = None
    seen_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class State:
    read_at: datetime | None
    archived_at: datetime | None

    @property
    def unread(self) -> bool:
        return self.read_at is None and self.archived_at is None

    def fits(self, filter: Filter) -> bool:
        if filter == "archived":
            return self.archived_at is not None
        if filter == "unread":
            return self.unread
        return self.archived_at is None


Views = Mapping[str, View]


def entitled(views: Views, stream: str, seq: int) -> bool:
    view = views.get(stream)
    return view is not None and view.has(seq)


def shown(views: Views, route: Route, now: datetime) -> bool:
    """Whether this route is how the user sees its notification: in range, not expired, not
    collapsed, not muted, and no route that takes precedence reaches the user (the same rule the
    live path applies with `also`, so a notification counts and lists once)."""
    view = views.get(route.stream)
    if view is None or not view.has(route.seq) or route.replaced:
        return False
    if route.type in view.muted or (route.expires_at is not None and route.expires_at <= now):
        return False
    return not any(entitled(views, s, q) for s, q in route.also.items())


def primary(views: Views, routes: Iterable[Route], now: datetime) -> Route | None:
    """The one route by which the user sees a notification, if any."""
    return next((r for r in routes if shown(views, r, now)), None)


def state(view: View, seq: int, mark: Mark | None) -> State:
    """A route's read and archived state: the mark where the user set one, else the watermarks."""
    if mark is not None and mark.archived_at is not None:
        archived_at: datetime | None = mark.archived_at
    elif seq <= view.archived:
        archived_at = view.archived_at
    else:
        archived_at = None
    if mark is not None and mark.unread:
        read_at = None
    elif mark is not None and mark.read_at is not None:
        read_at = mark.read_at
    elif seq <= view.read:
        read_at = view.read_at
    else:
        read_at = None
    return State(read_at, archived_at)


def unread_count(
    views: Views,
    counted: Mapping[str, int],
    irregular: Iterable[Route],
    marked: Iterable[tuple[Mark, list[Route]]],
    now: datetime,
) -> int:
    """The exact unread count.

    `counted`: per stream, the routes of unmuted types in its unread window (from ordinals).
    `irregular`: the irregular routes of unmuted types in those windows, each checked here.
    `marked`: the user's marks, each with its notification's routes in the viewed streams.
    """
    total = sum(counted.values())
    for route in irregular:
        view = views.get(route.stream)
        if view is None or route.type in view.muted or not view.unread_from < route.seq <= view.hi:
            continue  # not counted by the ordinals in the first place
        if not shown(views, route, now):
            total -= 1
    for mark, routes in marked:
        seen = primary(views, routes, now)
        if seen is None:
            continue
        view = views[seen.stream]
        assumed = seen.seq > view.unread_from  # what the ordinals counted for it
        total += int(state(view, seen.seq, mark).unread) - int(assumed)
    return total


def unseen_views(
    views: Views, marked: Iterable[tuple[Mark, list[Route]]]
) -> tuple[dict[str, View], list[tuple[Mark, list[Route]]]]:
    """The views and marks under which "unread" means "unseen": a notification is unseen when
    it is unread and was never shown (its own `seen_at`, or the seen watermark), so the unseen
    count is the unread count with the seen watermark folded into the read one and a seen mark
    counting as read. (One difference is accepted: a notification marked unread below the seen
    watermark, never shown one by one, counts as unseen again.)"""
    out = {k: replace(v, read=max(v.read, v.seen)) for k, v in views.items()}
    folded = []
    for mark, routes in marked:
        if mark.seen_at is not None:
            mark = replace(mark, read_at=mark.read_at or mark.seen_at, unread=False)
        folded.append((mark, routes))
    return out, folded


def seen(view: View, seq: int, mark: Mark | None) -> bool:
    """Whether a route was shown to the user (or read or archived, which imply it)."""
    if mark is not None and mark.seen_at is not None:
        return True
    return seq <= view.seen or not state(view, seq, mark).unread


def extras(
    views: Views, marked: Iterable[tuple[Mark, list[Route]]], filter: Filter, now: datetime
) -> list[tuple[Route, State]]:
    """Notifications a filter takes although their route lies outside its default window: marked
    unread below the read watermark, or archived one by one above the archive watermark."""
    found = []
    for mark, routes in marked:
        route = primary(views, routes, now)
        if route is None:
            continue
        view = views[route.stream]
        low, high = view.window(filter)
        if low < route.seq <= high:
            continue  # the stream's own page query finds it
        st = state(view, route.seq, mark)
        if st.fits(filter):
            found.append((route, st))
    found.sort(key=lambda item: item[0].id, reverse=True)
    return found


@dataclass(slots=True)
class PagePosition:
    """Where a page ended: per stream, the last seq listed; for marked extras, the last id."""

    streams: dict[str, int] = field(default_factory=dict)
    extra: str | None = None

    def encode(self) -> str:
        return encode_token({"s": self.streams, "x": self.extra})

    @classmethod
    def decode(cls, cursor: str | None) -> PagePosition:
        """Raises ValueError with a message for the client."""
        if not cursor:
            return cls()
        value = decode_token(cursor, MAX_PAGE_CURSOR)
        if not isinstance(value, dict):
            raise ValueError("cursor is not valid")
        streams, extra = checked_position(value.get("s")), value.get("x")
        if extra is not None and (not isinstance(extra, str) or not ID.fullmatch(extra)):
            raise ValueError("cursor is not valid")
        return cls(streams, extra)

    def below(self, stream: str) -> int | None:
        """Routes of `stream` on the next page have a seq below this (None: no bound yet)."""
        return self.streams.get(stream)


class Listed(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def seq(self) -> int: ...


@dataclass(slots=True)
class Source:
    """One stream's rows for a page, newest first, as far as they were read."""

    rows: Sequence[Listed]
    done: bool  # nothing more below the last row read


def merge(
    sources: Mapping[str, Source], extras: Sequence[Listed], limit: int
) -> list[tuple[str, Listed]] | str:
    """Merge per-stream pages, newest id first, into at most `limit` (stream, row) pairs (""
    for an extra); or the name of a stream whose rows ran out before the page was sure (read
    more of it and merge again). Each stream keeps its own position (`advance`), so a
    notification is listed once even where seq order and id order disagree between streams."""
    taken: dict[str, int] = dict.fromkeys(sources, 0)
    extra_at = 0
    out: list[tuple[str, Listed]] = []
    while len(out) < limit:
        best: tuple[str, Listed] | None = None
        for name, source in sources.items():
            if taken[name] < len(source.rows):
                row = source.rows[taken[name]]
                if best is None or row.id > best[1].id:
                    best = (name, row)
            elif not source.done:
                return name
        if extra_at < len(extras) and (best is None or extras[extra_at].id > best[1].id):
            best = ("", extras[extra_at])
        if best is None:
            break
        out.append(best)
        if best[0]:
            taken[best[0]] += 1
        else:
            extra_at += 1
    return out


def advance(position: PagePosition, listed: Iterable[tuple[str, Listed]]) -> PagePosition:
    """The position after the listed rows."""
    after = PagePosition(dict(position.streams), position.extra)
    for name, row in listed:
        if name:
            after.streams[name] = row.seq
        else:
            after.extra = row.id
    return after
