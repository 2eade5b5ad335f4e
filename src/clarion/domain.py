"""Data shapes, errors and time helpers shared by every layer: the bottom of the import graph.

Nothing here imports the store, the web layer, FastAPI or pydantic, so the store, auth, the
preference rules and the API can all take their types from one place without pulling each
other in.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Change = Literal["read", "unread", "archived", "read_all", "archive_all", "seen", "seen_all"]
Filter = Literal["all", "unread", "archived"]
CONTROL_KINDS = frozenset({"follow", "unfollow", "preferences"})  # change what sessions follow


@dataclass(frozen=True, slots=True)
class Meta:
    """What delivery needs to know of an event, carried typed beside its bytes from the store
    through the broker to the hub, so no node parses or searches the JSON to route it."""

    kind: str = ""  # notification, state, follow, unfollow, preferences
    type: str = ""  # a notification's type: sessions drop muted types by it
    also: Mapping[str, int] | None = None  # a notification's streams that take precedence
    topic: str = ""  # follow, unfollow: the topic stream
    at: int = 0  # follow, unfollow: the topic's seq where following starts or ends
    muted: tuple[str, ...] = ()  # preferences: the types the user now mutes
    # A notification published live: when its publish was accepted (Unix seconds), so the node
    # that writes it to a socket can time publish-to-socket (hub.py). 0: unknown (read back
    # from the store: a replay or a refill, not timed).
    accepted: float = 0.0


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A committed stream event: the bytes to send, where it stands in its stream, and its
    routing metadata."""

    stream: str
    seq: int
    payload: bytes
    meta: Meta = Meta()


@dataclass(slots=True)
class Published:
    id: str
    events: list[StoredEvent]
    recipients: int
    duplicate: bool = False
    replayed_streams: list[str] = field(default_factory=list)  # a duplicate's first streams
    held: int = 0  # named users whose copy waits for a digest
    skipped: int = 0  # named users who opted out in-app
    conflict: bool = False  # the idempotency key was used before with another body
    scheduled_for: datetime | None = None  # accepted for later: no events until then

    @property
    def streams(self) -> list[str]:
        return sorted({e.stream for e in self.events} or self.replayed_streams)


@dataclass(slots=True)
class StateChanged:
    event: StoredEvent | None
    unread: int
    unseen: int = 0


@dataclass(slots=True)
class ApiKey:
    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


@dataclass(slots=True)
class Draft:
    """A validated notification ready to store: its JSON `doc` and the columns queries need."""

    id: str
    type: str
    priority: str
    doc: bytes
    created_at: datetime
    expires_at: datetime | None = None
    collapse_key: str | None = None
    users: list[str] = field(default_factory=list)
    shared: list[str] = field(default_factory=list)
    idempotency_key: str | None = None  # scoped to its publisher: `<key id>:<key>`
    fingerprint: str | None = None  # of the request body: a reused key must repeat it
    publisher: str | None = None
    digest: bool = True  # False for digest summaries: they are never held themselves
    cancellation_key: str | None = None  # cancels it while a copy is pending (store/schedule.py)
    escalate: tuple[Escalation, ...] | None = None  # None: the type's rules (docs/channels.md)


@dataclass(slots=True)
class InboxPage:
    """A page of a user's inbox, newest first, read in one transaction with its unread count."""

    items: list[dict[str, Any]]
    next_cursor: str | None  # None: this is the last page
    unread: int
    unseen: int = 0


@dataclass(slots=True)
class Snapshot:
    """What a connection needs to start, read in one transaction."""

    heads: dict[str, int]
    unread: int
    topics: list[str]  # topic streams the user follows
    muted: frozenset[str]  # types the user does not want in-app
    since: dict[str, int] = field(default_factory=dict)  # shared streams: where following began
    unseen: int = 0


@dataclass(frozen=True, slots=True)
class Escalation:
    """ "Use `channel` if the user has not seen (or read) it `after` seconds on"; `offline`:
    only if the user had no live connection when it was published."""

    channel: str = "email"
    after: int = 900
    unless: str = "seen"  # seen | read
    offline: bool = False


@dataclass(frozen=True, slots=True)
class TypeSettings:
    """The app's rules for one notification type (`PUT /v1/types/{type}`)."""

    type: str
    in_app: bool = True
    push: bool = True
    mandatory: bool = False
    throttle_count: int | None = None
    throttle_seconds: int | None = None
    digest_seconds: int | None = None
    email: bool = True
    # channel: locale: part: template source (templates.py checks them)
    templates: Mapping[str, Mapping[str, Mapping[str, str]]] = field(default_factory=dict)
    escalate: tuple[Escalation, ...] = ()
    locale: str = "en"  # the templates' default locale


@dataclass(slots=True)
class UserPreferences:
    timezone: str = "UTC"
    quiet_start: str | None = None
    quiet_end: str | None = None
    types: dict[str, tuple[bool | None, bool | None]] = field(default_factory=dict)
    email: dict[str, bool] = field(default_factory=dict)  # per type, where the user chose


@dataclass(slots=True)
class Profile:
    """What the app tells Clarion about a user (`PUT /v1/users/{id}`)."""

    id: str
    email: str | None = None
    name: str | None = None
    locale: str | None = None
    timezone: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    email_status: str | None = None  # "bad": refused for good
    updated_at: datetime | None = None


# -- errors the store and the edges raise (errors.py renders them as HTTP JSON) ---------------


class ClarionError(Exception):
    """An error a client can act on: HTTP status, stable code, message and offending field."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "field": self.field}}


class Unauthorized(ClarionError):
    def __init__(self, message: str = "missing or invalid credentials") -> None:
        super().__init__(401, "unauthorized", message)


class Forbidden(ClarionError):
    def __init__(self, message: str) -> None:
        super().__init__(403, "forbidden", message)


class NotFound(ClarionError):
    def __init__(self, message: str = "not found") -> None:
        super().__init__(404, "not_found", message)


class BadRequest(ClarionError):
    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(400, "bad_request", message, field)


class StoreUnavailable(ClarionError):
    """The store could not commit: nothing was acknowledged."""

    def __init__(self, message: str = "store unavailable, nothing was stored") -> None:
        super().__init__(503, "unavailable", message)


# -- time ------------------------------------------------------------------------------------


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """Millisecond ISO 8601 in UTC with a `Z`, the one time format on the wire."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
