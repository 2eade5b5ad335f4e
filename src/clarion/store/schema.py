"""Tables, as SQLAlchemy Core metadata; Alembic migrations (migrations/) create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
)

metadata = MetaData()
TS = DateTime(timezone=True)

# One row per stream: its last seq. Incrementing it in the publishing transaction serialises
# publishers per stream (row lock) and makes seq order equal commit order, gap-free.
streams = Table(
    "streams",
    metadata,
    Column("name", String(255), primary_key=True),
    Column("seq", BigInteger, nullable=False),
)

# Every stream event as the exact JSON sent live, so a resume replays bytes without re-encoding.
events = Table(
    "events",
    metadata,
    Column("stream", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("kind", String(16), nullable=False),
    Column("notification_id", String(26)),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
)

# A notification is stored once, whatever its audience. `doc` is its JSON as sent to clients.
# `stream`/`seq` are set when it went to a shared stream (`all`, a topic, a role).
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("stream", String(255)),
    Column("seq", BigInteger),
    Column("collapse_key", String(128)),
    Column("doc", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("publisher", String(32)),
    Index("ix_notifications_stream_seq", "stream", "seq"),
)

# Per user and notification: the delivery (personal=True, written at publish) or, for shared
# streams, the user's own state, written only when the user acts.
inbox = Table(
    "inbox",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("notification_id", String(26), primary_key=True),
    Column("personal", Boolean, nullable=False),
    Column("read_at", TS),
    Column("archived_at", TS),
    Column("seen_at", TS),
    Index("ix_inbox_user_personal", "user_id", "personal", "notification_id"),
)

# Which shared streams a user sees in its inbox, and from which seq on.
follows = Table(
    "follows",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("stream", String(255), primary_key=True),
    Column("since_seq", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("hash", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("revoked_at", TS),
    Column("last_used_at", TS),
)

# Idempotency keys: a replay answers the first publish's result.
idempotency = Table(
    "idempotency",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("notification_id", String(26), nullable=False),
    Column("result", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
)

# Short-lived single-use tickets that let EventSource authenticate without a JWT in the URL.
tickets = Table(
    "tickets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("claims", LargeBinary, nullable=False),
    Column("expires_at", TS, nullable=False),
)
