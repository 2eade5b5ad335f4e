"""The hub: this process's live connections, indexed by the streams they follow.

Design (docs/architecture.md): the hub keeps, per followed stream, the last seq it dispatched.
Events from the broker are dispatched strictly in seq order; a gap (a lost or reordered broker
message) is filled from the store before anything after it goes out, so sessions never track
order themselves. Each event becomes one `Frame` written unchanged to every session. A session
that cannot keep up is closed with a resync hint instead of buffering without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from clarion import access, tracing
from clarion.batching import Batcher
from clarion.broker import Broker
from clarion.domain import ClarionError, Meta, Snapshot, StoredEvent
from clarion.events import message
from clarion.frames import Frame
from clarion.logs import REQUEST_ID, new_request_id
from clarion.store import Store
from clarion.streams import USER_PREFIX, encode_cursor
from clarion.tasks import spawn
from clarion.timings import Timings
from clarion.transports.cork import after_write

log = logging.getLogger("clarion.hub")

REPLAY_PAGE = 500
SNAPSHOTS_PER_READ = 64  # handshakes whose snapshots one store read serves at most
HEADS_PER_READ = 1_000  # streams whose heads one batched read (`_joined_heads`) asks for
CLOSE_SLOW_CONSUMER = 4008
NOTHING_MUTED: frozenset[str] = frozenset()


class TooManyConnections(ClarionError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            429, "too_many_connections", f"this user has {limit} live connections here already"
        )


class Sink(Protocol):
    """What a transport gives the hub: non-blocking writes and a way to close."""

    via: str  # the transport's name (websocket, sse, poll), for presence and the delivery log

    def send(self, frame: Frame, session: Session) -> bool:
        """Queue the frame, or return False without queueing it: the buffer is over its limit."""
        ...

    async def drain(self) -> None:
        """Wait until the buffer is below its limit (used while replaying history)."""
        ...

    def close(self, code: int, reason: str, last: Frame | None = None) -> None:
        """Close; `last` (a final hint) is written first even when the buffer is full."""
        ...


class Session:
    """One live connection as the hub sees it: user, streams, position and sink."""

    __slots__ = (
        "backlog",
        "catching",
        "close_code",
        "closed",
        "live",
        "muted",
        "on_control",
        "position",
        "reported",
        "request_id",
        "sent",
        "since",
        "sink",
        "started",
        "streams",
        "user",
    )

    def __init__(self, user: str, streams: list[str], sink: Sink) -> None:
        self.user = user
        self.streams = list(streams)
        self.sink = sink
        self.position: dict[str, int] = {}
        self.live = False
        self.closed = False
        self.backlog: list[Frame] | None = []
        self.catching: dict[str, list[Frame]] = {}  # streams being replayed after a follow
        self.since: dict[str, int] = {}  # shared streams: the seq after which it is entitled
        self.reported: dict[str, int] = {}  # positions the client had passed (its cursor)
        self.muted: frozenset[str] = frozenset()
        self.on_control: Callable[[Session, Meta], None] | None = None
        # For the session's access-log line (access.session_ended).
        self.started = time.monotonic()
        self.request_id = REQUEST_ID.get() or new_request_id()
        self.sent = 0  # frames handed to the sink
        self.close_code: int | None = None  # set when the server closes it; None: the client

    @property
    def cursor(self) -> str:
        return encode_cursor(self.position)

    def deliver(self, frame: Frame) -> bool:
        """Hot path: called once per event and session. False means: too slow, close it."""
        if self.closed:  # after a refused frame nothing may follow it, or the cursor skips it
            return True
        if not self.live:
            if self.backlog is not None:
                self.backlog.append(frame)
            return True
        if self.catching and frame.stream in self.catching:
            self.catching[frame.stream].append(frame)
            return True
        if frame.seq <= self.position.get(frame.stream, 0):
            return True
        self.position[frame.stream] = frame.seq
        if (frame.also is not None or self.muted) and not self.wants(frame):
            return True  # (the common frame skips the call: this runs per frame and session)
        ok = self.sink.send(frame, self)
        self.sent += 1
        if frame.control is not None and self.on_control is not None:
            self.on_control(self, frame.control)
        return ok

    def wants(self, frame: Frame) -> bool:
        """False for a muted type, or for a copy of a notification this user gets (or got)
        through a stream that takes precedence: one it was following when the notification
        came, or one its client had already read past. A user in several audiences thus
        sees a notification once, also across reconnects, without any per-session memory."""
        if frame.also is not None:
            for stream, seq in frame.also.items():
                since = self.since.get(stream)
                if (since is not None and since < seq) or self.reported.get(stream, 0) >= seq:
                    return False
        if self.muted and not frame.stream.startswith(USER_PREFIX):
            return frame.ntype not in self.muted
        return True


class Observer(Protocol):
    """What else wants to know when sessions start and end (control.py's presence): called
    on the connection path, so it only counts in memory."""

    def connected(self, session: Session) -> None: ...
    def disconnected(self, session: Session) -> None: ...


class _Stream:
    __slots__ = ("filling", "head", "pending", "sessions")

    def __init__(self) -> None:
        self.sessions: set[Session] = set()
        self.head: int | None = None  # unknown until read from the store
        self.pending: dict[int, StoredEvent] = {}
        self.filling = False


class Hub:
    def __init__(
        self,
        store: Store,
        broker: Broker,
        *,
        check_interval: float = 5.0,
        max_per_user: int = 100,
    ) -> None:
        self.store = store
        self.broker = broker
        # A storm of connections reads its snapshots together: one store transaction of a few
        # statements for every handshake waiting, as group commit does for publishes.
        self._snapshots: Batcher[tuple[str, list[str], bool], Snapshot] = Batcher(
            store.snapshots, max_weight=SNAPSHOTS_PER_READ
        )
        # The heads of the topics a handshake joins after its snapshot, batched the same way:
        # one read per handshake was a trip to the database each for every user who follows
        # a topic (docs/benchmarks.md, connect storms against history).
        self._joined: Batcher[list[str], dict[str, int]] = Batcher(
            self._joined_heads, max_weight=HEADS_PER_READ, weight=len
        )
        self.streams: dict[str, _Stream] = {}
        self.sessions: set[Session] = set()
        self.max_per_user = max_per_user
        self.per_user: dict[str, int] = {}
        # Live sessions by transport, counted as they come and go: the stats snapshot (every
        # second with the console on) and the metrics read it without visiting every session.
        self.transports: Counter[str] = Counter()
        self.check_interval = check_interval
        self._checker: asyncio.Task[None] | None = None
        self.delivered = 0
        self.dropped_slow = 0
        # Told of sessions starting and ending (presence), and of each notification event
        # dispatched with the sessions it went to (the delivery log: control.py).
        self.observer: Observer | None = None
        self.on_dispatch: Callable[[Frame, Collection[Session]], None] | None = None
        self.broker_resets = 0  # the broker reconnected (messages may have been lost)
        # Streams of the cluster's own signals (no session follows them): handler by name.
        self.signals: dict[str, Callable[[StoredEvent], None]] = {}
        self.handshakes = Timings()  # attach to live, by transport (metrics.py)
        # Publish-to-socket: from a notification's acceptance to the write of its frame to this
        # node's sockets, one sample per event and node (not per session): `_timed`.
        self.socket_latency = Timings()
        self._written: list[float] = []  # acceptance times of events dispatched this turn

    async def start(self) -> None:
        await self.broker.connect(self.on_event, self.on_reset)
        self._checker = asyncio.create_task(self._check_loop())

    async def stop(self, code: int = 1012, reason: str = "server restarting") -> None:
        if self._checker:
            self._checker.cancel()
        self.close_sessions(code, reason)
        await self.broker.close()

    def close_sessions(self, code: int = 1012, reason: str = "server restarting") -> None:
        """Close every live session (they reconnect elsewhere with their cursors)."""
        for session in list(self.sessions):
            session.close_code = code
            session.sink.close(code, reason)

    # -- sessions -----------------------------------------------------------------------------

    async def attach(
        self,
        session: Session,
        position: dict[str, int],
        welcome: dict[str, object] | None = None,
        limit: int | None = None,
    ) -> tuple[dict[str, int], bool]:
        """Register, send `welcome`, replay what was missed, send `unread`, go live.

        Frames dispatched while the replay runs wait in the session's backlog; those the
        replay already sent are dropped by seq, so each event arrives once and in order.
        Without `welcome` (long-polling) only the replay is sent, at most `limit` events;
        returns the starting position and whether more events were left. A user already at
        `max_per_user` sessions here gets `TooManyConnections` (429).
        """
        held = self.per_user.get(session.user, 0)
        if held >= self.max_per_user:
            raise TooManyConnections(self.max_per_user)
        self.per_user[session.user] = held + 1
        self.sessions.add(session)
        self.transports[access.transport_of(session)] += 1
        if self.observer is not None:
            self.observer.connected(session)
        session.on_control = self._control
        await self._register(session, session.streams)
        snap = await self._snapshots.submit(
            (session.user, list(session.streams), welcome is not None)
        )
        heads, unread = snap.heads, snap.unread
        session.muted = snap.muted or NOTHING_MUTED  # one empty set for all: 216 B a session
        session.since = snap.since
        session.reported = dict(position)
        topics = [t for t in snap.topics if t not in session.streams]
        session.streams += topics
        counted = dict(heads)  # what the unread count is as of
        if topics:
            # Joined after the snapshot was read: an event dispatched between that read and the
            # join reached the topic's other sessions only. Heads taken after the join (from
            # this node where the topic is live here, else from the store) cover it, so the
            # catch-up after `unread` brings it (and later ones wait in the backlog).
            await self._register(session, topics)
            heads.update(await self._joined_heads_of(topics, heads))
        self._heads(session.streams, heads)
        # A resuming client starts where its cursor says; on a stream it never heard of (a
        # topic followed while it was away) where following began; a new client at the head.
        start = {
            s: min(
                position.get(s, session.since.get(s, heads[s]) if position else heads[s]), heads[s]
            )
            for s in session.streams
        }
        session.position = dict(start)
        if welcome is not None:
            welcome["cursor"] = encode_cursor(start)
            await self._send_now(session, Frame(message("welcome", **welcome)))
        # The replay stops at the snapshot's heads, the `unread` count's: an event after them
        # (in the backlog, or on a joined topic before its join) comes after the count and, like
        # any live one, adds itself to it.
        budget = await self._catch_up(session, counted, limit if limit is not None else 1 << 62)
        if budget > 0 and welcome is not None:
            await self._send_now(
                session, Frame(message("unread", count=unread, unseen=snap.unseen))
            )
        if topics and budget > 0:
            budget = await self._catch_up(session, heads, budget)
        if budget <= 0:
            return start, True
        backlog, session.backlog = session.backlog or [], None
        session.live = True
        self.handshakes.observe(access.transport_of(session), time.monotonic() - session.started)
        for frame in backlog:
            if not session.deliver(frame):
                self._overflow(session)
                break
        return start, False

    async def _catch_up(self, session: Session, upto: dict[str, int], budget: int) -> int:
        """Replay each stream from the session's position to `upto` (events after it are left
        to the backlog), at most `budget` events; returns the budget left."""
        for name in session.streams:
            budget = await self._replay(session, name, upto[name], budget)
        return budget

    async def _joined_heads_of(self, topics: list[str], read: dict[str, int]) -> dict[str, int]:
        """The heads of topics just joined. A topic live here already (its head known: other
        sessions follow it) needs no read: every event dispatched to them before the join is
        at or below its head here, and later ones reach this session too. The others are read
        from the store, batched with other handshakes' (in a storm, after its first
        handshakes, every followed topic is live here)."""
        known = {}
        unknown = []
        for name in topics:
            head = self.streams[name].head
            if head is None:
                unknown.append(name)
            else:
                known[name] = max(head, read.get(name, 0))
        if unknown:
            known |= await self._joined.submit(unknown)
        return known

    async def _joined_heads(self, asked: list[list[str]]) -> list[dict[str, int]]:
        """The heads of several handshakes' joined topics, read together."""
        found = await self.store.heads(sorted({n for names in asked for n in names}))
        return [{n: found[n] for n in names} for names in asked]

    async def _register(self, session: Session, names: list[str]) -> None:
        new = [s for s in names if s not in self.streams]
        for name in names:
            self.streams.setdefault(name, _Stream()).sessions.add(session)
        if new:
            await self.broker.subscribe(new)

    def _heads(self, names: list[str], heads: dict[str, int]) -> None:
        """Streams new here start at the store's head; what the broker brought waits."""
        for name in names:
            st = self.streams.get(name)
            if st is not None and st.head is None and name in heads:
                st.head = heads[name]
                self._drain_pending(name, st)

    # -- follow / unfollow while live ---------------------------------------------------------

    def _control(self, session: Session, meta: Meta) -> None:
        if meta.kind == "preferences":
            session.muted = frozenset(meta.muted)
        elif meta.kind == "follow":
            spawn(self.follow(session, meta.topic, meta.at))
        elif meta.kind == "unfollow":
            spawn(self.unfollow(session, meta.topic, meta.at))

    async def follow(self, session: Session, name: str, since: int) -> None:
        """Start following `name` from `since`: replay what this session missed of it, while
        its live events wait, then let them through (the same dance as `attach`)."""
        if name in session.streams or session.closed:
            return
        session.streams.append(name)
        session.position[name] = since
        session.since[name] = since
        session.catching[name] = []
        try:
            await self._register(session, [name])
            self._heads([name], await self.store.heads([name]))
            await self._replay(session, name, None)
        finally:
            waiting = session.catching.pop(name, [])
        for frame in waiting:
            if not session.deliver(frame):
                self._overflow(session)
                return

    async def unfollow(self, session: Session, name: str, until: int) -> None:
        """Stop following `name` after `until`: what came before the unfollow still arrives."""
        if name not in session.streams or session.closed:
            return
        session.catching[name] = []
        try:
            if session.position.get(name, 0) < until:
                await self._replay(session, name, until)
        finally:
            waiting = session.catching.pop(name, [])
        for frame in waiting:
            if frame.seq <= until and not session.deliver(frame):
                self._overflow(session)
                return
        session.streams.remove(name)
        session.since.pop(name, None)
        passed = session.position.pop(name, 0)
        session.reported[name] = max(session.reported.get(name, 0), passed)
        self._leave(session, [name])

    async def _replay(
        self, session: Session, name: str, upto: int | None, budget: int = 1 << 62
    ) -> int:
        """Send `name`'s events from the session's position up to `upto` (None: all there
        are), at most `budget` of them; returns the budget left."""
        end = 1 << 62 if upto is None else upto
        while not session.closed and budget > 0 and session.position[name] < end:
            got = await self.store.events_after(
                name, session.position[name], min(REPLAY_PAGE, budget)
            )
            page = [ev for ev in got if ev.seq <= end]
            for ev in page:
                session.position[name] = ev.seq
                frame = Frame.event(ev)
                if session.wants(frame):
                    await self._send_now(session, frame)
                    if frame.ntype and self.on_dispatch is not None:
                        self.on_dispatch(frame, (session,))
            budget -= len(page)
            if len(got) < REPLAY_PAGE or len(page) < len(got):  # the last page, or past `upto`
                break
        return budget

    async def _send_now(self, session: Session, frame: Frame) -> None:
        """Replay path: a full buffer is waited out (the frame is then sent), never dropped."""
        while not session.closed and not session.sink.send(frame, session):
            await session.sink.drain()
        session.sent += 1

    def detach(self, session: Session) -> None:
        """Forget a closed session; streams nobody here follows any more are unsubscribed."""
        session.closed = True
        if session in self.sessions:
            self.sessions.remove(session)
            left = self.per_user.pop(session.user) - 1
            if left:
                self.per_user[session.user] = left
            via = access.transport_of(session)
            self.transports[via] -= 1
            if not self.transports[via]:
                del self.transports[via]
            if self.observer is not None:
                self.observer.disconnected(session)
            access.session_ended(session)
        self._leave(session, session.streams)

    def _leave(self, session: Session, names: list[str]) -> None:
        gone = []
        for name in names:
            st = self.streams.get(name)
            if st is None:
                continue
            st.sessions.discard(session)
            if not st.sessions:
                del self.streams[name]
                gone.append(name)
        if gone:
            spawn(self._unsubscribe(gone))

    async def _unsubscribe(self, names: list[str]) -> None:
        """Runs later: skip streams a new session followed again in the meantime."""
        names = [n for n in names if n not in self.streams]
        if names:
            await self.broker.unsubscribe(names)

    def _overflow(self, session: Session) -> None:
        if session.closed:
            return
        session.closed = True
        self.dropped_slow += 1
        session.close_code = CLOSE_SLOW_CONSUMER
        resync = Frame(message("resync", reason="slow_consumer"))
        session.sink.close(CLOSE_SLOW_CONSUMER, "slow consumer: reconnect with your cursor", resync)

    # -- events -------------------------------------------------------------------------------

    def on_event(self, event: StoredEvent) -> None:
        """From the broker. In order: dispatch; duplicate: drop; ahead: fill the gap first."""
        stream, seq = event.stream, event.seq
        st = self.streams.get(stream)
        if st is None:
            if (signal := self.signals.get(stream)) is not None:
                signal(event)
            return
        if st.head is None or st.filling:
            st.pending[seq] = event
            return
        if seq <= st.head:
            return
        if seq == st.head + 1:
            self._dispatch(st, Frame.event(event))
            if st.pending:
                self._drain_pending(stream, st)
            return
        st.pending[seq] = event
        self._fill(stream, st)

    def _dispatch(self, st: _Stream, frame: Frame) -> None:
        st.head = frame.seq
        slow = None
        with tracing.span("clarion.fanout", stream=frame.stream, seq=frame.seq) as span:
            for session in st.sessions:
                if not session.deliver(frame):
                    slow = [*(slow or []), session]
            span.set_attribute("clarion.sessions", len(st.sessions))
        self.delivered += len(st.sessions)
        if frame.accepted and st.sessions:
            if not self._written:
                after_write(self._timed)
            self._written.append(frame.accepted)
        if frame.ntype and self.on_dispatch is not None:
            self.on_dispatch(frame, st.sessions)
        for session in slow or ():
            self._overflow(session)

    def _timed(self) -> None:
        """Runs once the corked writes that carry the events dispatched have gone out
        (transports/cork.py: end of the turn, or later under load by `write_delay`), so now is
        when the frames went to the sockets (a long-poll answers within its 20 ms gather). Wall
        clock: the acceptance time may come from another node (clocks kept by NTP)."""
        now = time.time()
        accepted, self._written = self._written, []
        for at in accepted:
            self.socket_latency.observe("socket", max(0.0, now - at))

    def _drain_pending(self, stream: str, st: _Stream) -> None:
        assert st.head is not None
        while st.pending:
            nxt = st.head + 1
            event = st.pending.pop(nxt, None)
            if event is None:
                stale = [s for s in st.pending if s <= st.head]
                for s in stale:
                    del st.pending[s]
                if st.pending:
                    self._fill(stream, st)
                return
            self._dispatch(st, Frame.event(event))

    def _fill(self, stream: str, st: _Stream) -> None:
        if not st.filling:
            st.filling = True
            spawn(self._fill_from_store(stream, st))

    async def _fill_from_store(self, stream: str, st: _Stream) -> None:
        """Read the missing events from the store: every event is committed before the broker
        carries it, so the store holds all up to the highest pending seq (less expired ones)."""
        try:
            while st.head is not None:
                page = await self.store.events_after(stream, st.head, REPLAY_PAGE)
                for ev in page:
                    self._dispatch(st, Frame.event(ev))
                if len(page) < REPLAY_PAGE:
                    break
            if st.head is not None:
                for seq in [s for s in st.pending if s <= st.head]:
                    del st.pending[seq]
                if st.pending:  # the store skipped expired events: step over them
                    st.head = max(st.head, min(st.pending) - 1)
        except Exception:
            log.exception("filling %s from the store failed; the next check retries", stream)
        finally:
            st.filling = False
        if st.pending and st.head is not None:
            self._drain_pending(stream, st)

    def on_reset(self) -> None:
        """The broker reconnected and may have lost messages: refill every stream now."""
        self.broker_resets += 1
        spawn(self.check_heads())

    async def check_heads(self, names: Iterable[str] | None = None) -> None:
        """Compare our heads with the store's and fill what the broker did not bring."""
        names = list(names if names is not None else self.streams)
        heads = await self.store.heads(names)  # one trip to the store for all of them
        for name in names:
            st = self.streams.get(name)
            if st and st.head is not None and not st.filling and heads[name] > st.head:
                self._fill(name, st)

    async def _check_loop(self) -> None:
        while True:
            await asyncio.sleep(self.check_interval)
            with contextlib.suppress(Exception):
                await self.check_heads()
