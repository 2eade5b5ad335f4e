"""The store interface. One SQL implementation serves SQLite and PostgreSQL (store/sql.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

Change = Literal["read", "unread", "archived", "read_all", "archive_all"]
Filter = Literal["all", "unread", "archived"]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A committed stream event: the bytes to send, and where it stands in its stream."""

    stream: str
    seq: int
    payload: bytes


@dataclass(slots=True)
class Published:
    id: str
    events: list[StoredEvent]
    recipients: int
    duplicate: bool = False
    replayed_streams: list[str] = field(default_factory=list)  # a duplicate's first streams
    held: int = 0  # named users whose copy waits for a digest
    skipped: int = 0  # named users who opted out in-app

    @property
    def streams(self) -> list[str]:
        return sorted({e.stream for e in self.events} or self.replayed_streams)


@dataclass(slots=True)
class StateChanged:
    event: StoredEvent | None
    unread: int


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
    idempotency_key: str | None = None
    publisher: str | None = None
    digest: bool = True  # False for digest summaries: they are never held themselves


@dataclass(slots=True)
class Snapshot:
    """What a connection needs to start, read in one transaction."""

    heads: dict[str, int]
    unread: int
    topics: list[str]  # topic streams the user follows
    muted: frozenset[str]  # types the user does not want in-app
    since: dict[str, int] = field(default_factory=dict)  # shared streams: where following began


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


@dataclass(slots=True)
class UserPreferences:
    timezone: str = "UTC"
    quiet_start: str | None = None
    quiet_end: str | None = None
    types: dict[str, tuple[bool | None, bool | None]] = field(default_factory=dict)


class Store(Protocol):
    """What the hub, the node and the API need from storage (store/sql.py implements it)."""

    async def connect(self) -> None: ...
    async def close(self) -> None: ...
    async def ping(self) -> None: ...

    async def publish(self, drafts: list[Draft]) -> list[Published]: ...
    async def events_after(self, stream: str, seq: int, limit: int) -> list[StoredEvent]: ...
    async def heads(self, streams: list[str]) -> dict[str, int]: ...
    async def snapshot(self, user: str, streams: list[str], unread: bool = True) -> Snapshot: ...

    async def list_inbox(
        self, user: str, filter: Filter, limit: int, before: str | None
    ) -> list[dict[str, Any]]: ...
    async def unread_count(self, user: str) -> int: ...
    async def change_state(self, user: str, change: Change, id: str | None) -> StateChanged: ...

    async def create_key(
        self, name: str, scope: str, expires_at: datetime | None
    ) -> tuple[ApiKey, str]: ...
    async def list_keys(self) -> list[ApiKey]: ...
    async def revoke_key(self, key_id: str) -> bool: ...
    async def verify_key(self, secret: str) -> ApiKey | None: ...

    async def create_ticket(self, user: str, claims: dict[str, Any], ttl: float) -> str: ...
    async def consume_ticket(self, ticket: str) -> dict[str, Any] | None: ...
