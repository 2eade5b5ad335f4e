"""The public data shapes: what a publisher sends and what a client receives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

Priority = Literal["low", "normal", "high", "critical"]

# A user id is the application's own string; control characters would corrupt logs and streams.
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
TypeName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
Link = Annotated[str, StringConstraints(max_length=2048)]

MAX_USERS = 1000
MAX_DATA_BYTES = 16 * 1024


class Actor(BaseModel):
    """Who or what caused the notification; shown as the sender on the card."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, max_length=200)
    name: str = Field(max_length=200)
    avatar: Link | None = None


class Action(BaseModel):
    """A labelled button: a link to follow, or a callback id the app receives."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=64)
    url: Link | None = None


class NotificationIn(BaseModel):
    """The fields of a notification, as a publisher sends them."""

    model_config = ConfigDict(extra="forbid")
    type: TypeName = "default"
    priority: Priority = "normal"
    title: str = Field(min_length=1, max_length=300)
    body: str = Field(default="", max_length=5000)
    icon: Link | None = None
    actor: Actor | None = None
    url: Link | None = None
    actions: list[Action] = Field(default_factory=list, max_length=3)
    data: dict[str, Any] = Field(default_factory=dict)
    expires_at: datetime | None = None
    ttl: int | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    collapse_key: str | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("actor", mode="before")
    @classmethod
    def _actor_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("data")
    @classmethod
    def _data_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(orjson.dumps(value)) > MAX_DATA_BYTES:
            raise ValueError(f"data is larger than {MAX_DATA_BYTES} bytes once encoded")
        return value

    def expiry(self, now: datetime) -> datetime | None:
        """`expires_at`, or `now + ttl`; always timezone-aware UTC."""
        if self.expires_at is not None:
            at = self.expires_at
            return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
        return now + timedelta(seconds=self.ttl) if self.ttl else None


class PublishIn(NotificationIn):
    """`POST /v1/notifications`: a notification and its audience."""

    users: list[UserId] = Field(default_factory=list, max_length=MAX_USERS)
    all: bool = False
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _has_audience(self) -> PublishIn:
        if not self.users and not self.all:
            raise ValueError("no audience: give `users` or `all: true`")
        return self


class PublishOut(BaseModel):
    id: str
    recipients: int = Field(description="users addressed by name (0 for `all` alone)")
    streams: list[str]
    duplicate: bool = Field(False, description="true when an idempotency key was replayed")


class UnreadOut(BaseModel):
    unread: int


class StateOut(BaseModel):
    id: str | None = None
    change: str
    unread: int


class PageOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
    unread: int


class KeyOut(BaseModel):
    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(value: datetime | None) -> str | None:
    """Millisecond ISO 8601 in UTC with a `Z`, the one time format on the wire."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
