"""The public data shapes: what a publisher sends and what a client receives."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from clarion.streams import CONTROL

Priority = Literal["low", "normal", "high", "critical"]

# A user id is the application's own string; control characters would corrupt logs and streams.
UserId = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")
]
TypeName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
]
# Text that reaches a database column or a one-line label: no control characters (PostgreSQL
# cannot store NUL; the rest corrupts logs and cards). Free text (`body`) may hold line breaks.
CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _line(value: str) -> str:
    if CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def _text(value: str) -> str:
    if CONTROL_BUT_LINES.search(value):
        raise ValueError("must not contain control characters other than line breaks and tabs")
    return value


def _link(value: str) -> str:
    """What a click or an image may load: http(s), or a path on the app's own origin. The
    clients refuse other schemes (`javascript:`, `data:`), and so does the API."""
    if CONTROL.search(value) or any(c.isspace() for c in value):
        raise ValueError("must be a URL without spaces or control characters")
    if urlsplit(value).scheme.lower() not in ("", "http", "https"):
        raise ValueError("must be an http(s) URL or a relative path")
    return value


def _utc(value: datetime) -> datetime:
    """Timezone-aware UTC; an instant that falls off the calendar in UTC is invalid input."""
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:
        raise ValueError("must fall between years 1 and 9999 in UTC") from None


Line = Annotated[str, AfterValidator(_line)]
Text = Annotated[str, AfterValidator(_text)]
Link = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_link)]
Instant = Annotated[datetime, AfterValidator(_utc)]
# Topics name what users follow (`project:42`, `repo/acme/api`); roles come from tokens.
TopicName = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:@/+=-]+$")
]
RoleName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:@/+=-]+$")
]
ClockTime = Annotated[str, StringConstraints(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]

MAX_USERS = 1000
MAX_SHARED = 100
MAX_BATCH = 500
MAX_DATA_BYTES = 16 * 1024
MAX_DATA_DEPTH = 32


def too_deep(value: dict[str, Any] | list[Any], limit: int = MAX_DATA_DEPTH) -> bool:
    """Whether lists and objects nest deeper than `limit` (iteratively, so a deep value cannot
    exhaust the stack here; orjson refuses over 254 levels, and clients recurse too)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, level = stack.pop()
        for child in item.values() if isinstance(item, dict) else item:
            if isinstance(child, dict | list):
                if level >= limit:
                    return True
                stack.append((child, level + 1))
    return False


class Actor(BaseModel):
    """Who or what caused the notification; shown as the sender on the card."""

    model_config = ConfigDict(extra="forbid")
    id: Line | None = Field(default=None, max_length=200)
    name: Line = Field(max_length=200)
    avatar: Link | None = None


class Action(BaseModel):
    """A labelled button: a link to follow, or a callback id the app receives."""

    model_config = ConfigDict(extra="forbid")
    id: Line = Field(min_length=1, max_length=64)
    label: Line = Field(min_length=1, max_length=64)
    url: Link | None = None


def _storable(value: dict[str, Any]) -> dict[str, Any]:
    """Free JSON `data`: bounded in depth and size, and storable as JSON."""
    if too_deep(value):
        raise ValueError(f"data nests deeper than {MAX_DATA_DEPTH} levels")
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError as exc:  # integers over 64 bits, lone surrogates
        raise ValueError(f"data cannot be stored as JSON: {exc}") from None
    if len(encoded) > MAX_DATA_BYTES:
        raise ValueError(f"data is larger than {MAX_DATA_BYTES} bytes once encoded")
    return value


def _locale(value: str) -> str:
    """A BCP 47 tag as browsers send them (`fr`, `fr-CA`, `zh-Hant-TW`), case as given."""
    if not re.fullmatch(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*", value):
        raise ValueError("must be a BCP 47 language tag such as `en` or `fr-CA`")
    return value


def _zone(value: str) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}") from None
    return value


def _email(value: str) -> str:
    """One address (`local@domain`), no display name, nothing an SMTP command would choke on."""
    if CONTROL.search(value) or any(c.isspace() or c in '<>,;"()' for c in value):
        raise ValueError("must be one email address, without spaces or a display name")
    local, at, domain = value.rpartition("@")
    if not at or not local or "." not in domain.strip(".") or len(local) > 64:
        raise ValueError("must be an email address such as ann@example.com")
    return value


Locale = Annotated[str, StringConstraints(max_length=35), AfterValidator(_locale)]
Zone = Annotated[str, StringConstraints(max_length=64), AfterValidator(_zone)]
Email = Annotated[str, StringConstraints(max_length=320), AfterValidator(_email)]


class ProfileIn(BaseModel):
    """`PUT /v1/users/{id}`: the whole profile (a field left out is cleared)."""

    model_config = ConfigDict(extra="forbid")
    email: Email | None = Field(None, description="where the email channel sends")
    name: Line | None = Field(None, max_length=200)
    locale: Locale | None = Field(None, description="BCP 47; picks the templates' variant")
    timezone: Zone | None = Field(None, description="IANA zone, e.g. Europe/Paris")
    data: dict[str, Any] = Field(default_factory=dict, description="free JSON for templates")

    @field_validator("data")
    @classmethod
    def _data_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _storable(value)


class InlineProfile(ProfileIn):
    """A recipient given with its profile in a publish: the profile is upserted first."""

    id: UserId


class ProfileOut(ProfileIn):
    id: str
    email_status: str | None = Field(None, description='"bad": refused for good (5xx)')
    updated_at: datetime | None = None


class ErasedOut(BaseModel):
    id: str
    erased: dict[str, int] = Field(description="rows removed, per table")


_USER_ID: TypeAdapter[str] = TypeAdapter(UserId)


def _recipient(value: Any) -> str | InlineProfile:
    """A user id, or an inline profile: an error names the item (`users[1]`), not the union
    member pydantic tried."""
    try:
        if isinstance(value, dict | InlineProfile):
            return InlineProfile.model_validate(value)
        return _USER_ID.validate_python(value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        raise ValueError(f"{where}: {message}" if where else message) from None


Recipient = Annotated[
    UserId | InlineProfile,
    PlainValidator(_recipient, json_schema_input_type=UserId | InlineProfile),
]


class EscalationIn(BaseModel):
    """ "If not seen in 15 minutes, email it": `{"channel": "email", "after": 900}`."""

    model_config = ConfigDict(extra="forbid")
    channel: Literal["email"] = "email"
    after: int = Field(900, ge=0, le=30 * 86400, description="seconds after the publish")
    unless: Literal["seen", "read"] = Field("seen", description="what cancels it")
    when: Literal["offline"] | None = Field(
        None, description="only if the user had no live connection at publish time"
    )


class NotificationIn(BaseModel):
    """The fields of a notification, as a publisher sends them."""

    model_config = ConfigDict(extra="forbid")
    type: TypeName = "default"
    priority: Priority = "normal"
    title: Line = Field(min_length=1, max_length=300)
    body: Text = Field(default="", max_length=5000)
    icon: Link | None = None
    actor: Actor | None = None
    url: Link | None = None
    actions: list[Action] = Field(default_factory=list, max_length=3)
    data: dict[str, Any] = Field(default_factory=dict)
    expires_at: Instant | None = None
    ttl: int | None = Field(default=None, ge=1, le=10 * 365 * 86400)
    collapse_key: Line | None = Field(default=None, min_length=1, max_length=128)

    @field_validator("actor", mode="before")
    @classmethod
    def _actor_shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("data")
    @classmethod
    def _data_size(cls, value: dict[str, Any]) -> dict[str, Any]:
        return _storable(value)

    def expiry(self, now: datetime) -> datetime | None:
        """`expires_at`, or `now + ttl`; always timezone-aware UTC."""
        if self.expires_at is not None:
            return self.expires_at
        return now + timedelta(seconds=self.ttl) if self.ttl else None


class PublishIn(NotificationIn):
    """`POST /v1/notifications`: a notification and its audience, in any mix."""

    users: list[Recipient] = Field(
        default_factory=list,
        max_length=MAX_USERS,
        description="user ids, or profiles (`{id, email, name, locale, ...}`) upserted first",
    )
    escalate: list[EscalationIn] | None = Field(
        default=None,
        max_length=5,
        description="instead of the type's rules: channels to use if not seen/read in time",
    )
    topics: list[TopicName] = Field(default_factory=list, max_length=MAX_SHARED)
    roles: list[RoleName] = Field(default_factory=list, max_length=MAX_SHARED)
    all: bool = False
    idempotency_key: Line | None = Field(default=None, min_length=1, max_length=128)
    send_at: Instant | None = Field(
        default=None, description="publish later, at this time (ISO 8601); past: now"
    )
    delay: int | None = Field(
        default=None, ge=0, le=366 * 86400, description="publish later, in this many seconds"
    )
    cancellation_key: Line | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="`POST /v1/notifications/cancel` with it cancels what is still pending",
    )

    @model_validator(mode="after")
    def _has_audience(self) -> PublishIn:
        if not (self.users or self.topics or self.roles or self.all):
            raise ValueError("no audience: give `users`, `topics`, `roles` or `all: true`")
        if self.send_at is not None and self.delay is not None:
            raise ValueError("give `send_at` or `delay`, not both")
        if self.send_at is not None and self.send_at - datetime.now(UTC) > timedelta(days=366):
            raise ValueError("`send_at` is more than a year ahead")
        return self

    @property
    def user_ids(self) -> list[str]:
        return [u if isinstance(u, str) else u.id for u in self.users]

    @property
    def profiles(self) -> list[InlineProfile]:
        return [u for u in self.users if not isinstance(u, str)]


class PublishOut(BaseModel):
    id: str
    recipients: int = Field(description="users addressed by name who get it now")
    streams: list[str]
    duplicate: bool = Field(False, description="true when an idempotency key was replayed")
    held: int = Field(0, description="named users whose copy waits for a digest (throttle)")
    skipped: int = Field(0, description="named users who opted out of this type in-app")
    scheduled_for: datetime | None = Field(
        default=None,
        description="accepted for later (`send_at`/`delay`): when it will be published",
    )


class BatchIn(BaseModel):
    """`POST /v1/notifications/batch`: up to 500 notifications, each with its own audience."""

    model_config = ConfigDict(extra="forbid")
    notifications: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItemOut(BaseModel):
    status: int = Field(description="201 created, 200 idempotent replay, 422 invalid, 503")
    result: PublishOut | None = None
    error: dict[str, Any] | None = None


class BatchOut(BaseModel):
    results: list[BatchItemOut]


class TopicFollow(BaseModel):
    topic: str
    granted: bool = Field(description="the publisher subscribed this user to the topic")


class TopicsOut(BaseModel):
    topics: list[TopicFollow]


class FollowOut(BaseModel):
    topic: str
    following: bool


class SubscribersIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    users: list[UserId] = Field(min_length=1, max_length=MAX_USERS)


class SubscribersOut(BaseModel):
    topic: str
    users: list[str]
    next_cursor: str | None = None


class ChannelsIn(BaseModel):
    """A user's choice for one type; null (or absent) falls back to the app's default."""

    model_config = ConfigDict(extra="forbid")
    in_app: bool | None = None
    push: bool | None = None
    email: bool | None = None


class QuietHours(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: ClockTime = Field(description="local time HH:MM when quiet hours begin")
    end: ClockTime = Field(description="local time HH:MM when they end (may be next day)")


class PreferencesIn(BaseModel):
    """`PUT /v1/me/preferences`: fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")
    timezone: str | None = Field(default=None, max_length=64)
    quiet_hours: QuietHours | None = None
    clear_quiet_hours: bool = False
    types: dict[TypeName, ChannelsIn] = Field(default_factory=dict, max_length=200)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}") from None
        return value


class ChannelsOut(BaseModel):
    in_app: bool
    push: bool
    email: bool = True
    mandatory: bool
    custom: bool = Field(description="the user chose; otherwise the app's default applies")


class PreferencesOut(BaseModel):
    timezone: str
    quiet_hours: QuietHours | None
    quiet_now: bool = Field(description="quiet hours are in force now: push is held back")
    types: dict[str, ChannelsOut]


class Throttle(BaseModel):
    model_config = ConfigDict(extra="forbid")
    count: int = Field(ge=1, le=100_000)
    seconds: int = Field(ge=1, le=7 * 86400)


class TypeSettingsIn(BaseModel):
    """`PUT /v1/types/{type}` (admin key): the app's defaults and rules for a type."""

    model_config = ConfigDict(extra="forbid")
    in_app: bool = True
    push: bool = True
    mandatory: bool = Field(False, description="users cannot opt out")
    throttle: Throttle | None = Field(None, description="at most `count` per user per window")
    digest_seconds: int | None = Field(
        None, ge=1, le=7 * 86400, description="collect low-priority ones into one summary"
    )
    email: bool = Field(True, description="the email channel's default for this type")
    templates: dict[str, dict[Locale, dict[str, str]]] = Field(
        default_factory=dict,
        description='per channel and locale: email {"subject", "html", "text"}, in_app '
        '{"title", "body"}; Jinja2 (sandboxed, autoescaped HTML), checked against sample data',
    )
    locale: Locale = Field("en", description="the templates' locale when none fits the user")
    escalate: list[EscalationIn] = Field(
        default_factory=list, max_length=5, description="default escalation rules"
    )


class TypeSettingsOut(TypeSettingsIn):
    type: str


class UnreadOut(BaseModel):
    unread: int
    unseen: int = Field(0, description="not yet shown in an open inbox (the badge's choice)")


class StateOut(BaseModel):
    id: str | None = None
    change: str
    unread: int
    unseen: int = 0


class PageOut(BaseModel):
    items: list[dict[str, Any]]
    next_cursor: str | None
    unread: int
    unseen: int = 0


class SeenIn(BaseModel):
    """`POST /v1/me/notifications/seen`: what an open inbox showed."""

    model_config = ConfigDict(extra="forbid")
    ids: list[Annotated[str, StringConstraints(pattern=r"^[0-9A-Z]{1,26}$")]] = Field(
        min_length=1, max_length=100
    )


class KeyOut(BaseModel):
    id: str
    name: str
    scope: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


# -- control and visibility (docs/control.md) -------------------------------------------------


class CancelIn(BaseModel):
    """`POST /v1/notifications/cancel`: what carries the key and is not released yet."""

    model_config = ConfigDict(extra="forbid")
    cancellation_key: Line = Field(min_length=1, max_length=128)
    users: list[UserId] = Field(
        default_factory=list, max_length=MAX_USERS, description="only these users' copies"
    )


class CancelOut(BaseModel):
    cancelled: int = Field(
        description="scheduled publishes (or named recipients of them), held digest items "
        "and pending escalations cancelled"
    )


class RecallOut(BaseModel):
    id: str
    recalled: bool = True
    streams: int = Field(description="streams told to remove it (a `state` event each)")


class DeliveryState(BaseModel):
    state: str = Field(description="accepted, scheduled, skipped, held, delivered, pushed, ...")
    at: str | None
    detail: str | None = Field(None, description="transport, reason, ...")


class DeliveryRecipient(BaseModel):
    user: str
    channel: str
    states: list[DeliveryState]


class DeliveriesOut(BaseModel):
    id: str
    type: str | None
    status: str = Field(description="scheduled, released, recalled or cancelled")
    scheduled_for: datetime | None = None
    created_at: datetime | None = None
    streams: list[str]
    counts: dict[str, int] = Field(
        description="per state; for topics, roles and `all`: live connections written to, "
        "and users who acted one by one"
    )
    recipients: list[DeliveryRecipient]
    next_cursor: str | None


WebhookEvent = Literal[
    "notification.delivered",
    "notification.seen",
    "notification.read",
    "notification.archived",
    "notification.recalled",
    "delivery.failed",
    "email.bounced",
    "user.connected",
    "user.disconnected",
]
WebhookName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]


class WebhookIn(BaseModel):
    """`PUT /v1/webhooks/{name}`: where to send which events."""

    model_config = ConfigDict(extra="forbid")
    url: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    events: list[WebhookEvent] = Field(min_length=1, max_length=9)
    types: list[TypeName] | None = Field(
        None, max_length=200, description="only notifications of these types (null: all)"
    )


class WebhookOut(BaseModel):
    name: str
    url: str
    events: list[str]
    types: list[str] | None
    created_at: datetime
    failing_since: datetime | None
    disabled_at: datetime | None = Field(description="set after a day of failures; PUT enables")
    pending: int = Field(0, description="messages waiting in the outbox")
    secret: str | None = Field(
        None, description="the signing secret (`whsec_...`), answered once, when created"
    )


class AttemptOut(BaseModel):
    message_id: str
    event: str
    at: datetime
    attempt: int
    status: int | None
    error: str | None


class AttemptsOut(BaseModel):
    attempts: list[AttemptOut]


class PresenceOut(BaseModel):
    user: str
    online: bool
    connections: int
    transports: dict[str, int] = Field(description="live connections by transport")
    last_seen: datetime | None
