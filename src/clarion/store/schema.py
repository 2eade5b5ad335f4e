"""Tables, as SQLAlchemy Core metadata; Alembic migrations (migrations/) create them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    false,
    text,
    true,
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
    Column("routed", BigInteger, nullable=False, server_default="0"),  # routes in this stream
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
    # Retention finds old non-notification events (follows, state changes) without a scan.
    Index(
        "ix_events_unrouted_created",
        "created_at",
        sqlite_where=text("notification_id IS NULL"),
        postgresql_where=text("notification_id IS NULL"),
    ),
)

# A notification is stored once, whatever its audience. `doc` is its JSON as sent to clients.
notifications = Table(
    "notifications",
    metadata,
    Column("id", String(26), primary_key=True),
    Column("type", String(64), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("collapse_key", String(128)),
    Column("doc", LargeBinary, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Column("publisher", String(32)),
    Index("ix_notifications_created", "created_at"),
    Index(
        "ix_notifications_expires",
        "expires_at",
        sqlite_where=text("expires_at IS NOT NULL"),
        postgresql_where=text("expires_at IS NOT NULL"),
    ),
)

# Where each notification went: one row per stream, personal (`user:…`) and shared (topics,
# roles, `all`), whatever the number of followers. `n` numbers a stream's routes (and `tn` a
# shared stream's routes of one type), so how many routes lie in a seq range is two index probes
# (clarion/inbox.py). Routes are deleted only as a prefix of their stream (retention), which keeps
# that arithmetic exact. `irregular` marks those the arithmetic cannot take on trust: 1 for the
# few looked at one by one (with `also`: routes of the same notification that take precedence,
# as {stream: seq} JSON), 2 for hidden ones (collapsed, recalled, expired and swept), counted by
# bucket. An expiring route is regular (0) until it expires; from then until the expiry sweep
# hides it, the count finds it through `ix_routes_expiring` (store/holes.py).
routes = Table(
    "routes",
    metadata,
    Column("stream", String(255), primary_key=True),
    Column("seq", BigInteger, primary_key=True),
    Column("notification_id", String(26), nullable=False),
    Column("type", String(64), nullable=False),
    Column("n", BigInteger, nullable=False),
    Column("tn", BigInteger),
    Column("expires_at", TS),
    Column("replaced", Boolean, nullable=False, server_default=false()),
    Column("also", LargeBinary),
    Column("collapsed", Integer, nullable=False, server_default="0"),
    Column("irregular", Integer, nullable=False, server_default="0"),  # 1: see above
    # The notification's collapse key while this route can still be collapsed (cleared when
    # it is), so finding what a new notification replaces reads only live candidates.
    Column("collapse_key", String(128)),
    Index("ix_routes_type", "stream", "type", "seq"),
    Index("ix_routes_notification", "notification_id"),
    Index(
        "ix_routes_collapse",
        "stream",
        "collapse_key",
        sqlite_where=text("collapse_key IS NOT NULL"),
        postgresql_where=text("collapse_key IS NOT NULL"),
    ),
    Index(
        "ix_routes_irregular",
        "stream",
        "seq",
        sqlite_where=text("irregular = 1"),
        postgresql_where=text("irregular = 1"),
    ),
    Index(
        "ix_routes_hidden",
        "stream",
        "seq",
        sqlite_where=text("irregular = 2"),
        postgresql_where=text("irregular = 2"),
    ),
    Index(
        "ix_routes_expiring",
        "stream",
        "expires_at",
        sqlite_where=text("expires_at IS NOT NULL AND irregular = 0"),
        postgresql_where=text("expires_at IS NOT NULL AND irregular = 0"),
    ),
)

# How many hidden routes (irregular = 2: collapsed away, or expired and swept) each stream has
# per bucket of 1,024 seqs and type (store/holes.py).
hole_buckets = Table(
    "hole_buckets",
    metadata,
    Column("stream", String(255), primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# The same per bucket, all types together: what a count sums when the user mutes no type (one
# row a bucket, where `hole_buckets` has one per type: store/holes.py). Clustered by its key on
# SQLite, so a sum reads the index alone.
hole_totals = Table(
    "hole_totals",
    metadata,
    Column("stream", String(255), primary_key=True),
    Column("bucket", BigInteger, primary_key=True),
    Column("n", BigInteger, nullable=False),
    sqlite_with_rowid=False,
)

# How many routes of each type a shared stream has had (the next route's `tn`).
stream_types = Table(
    "stream_types",
    metadata,
    Column("stream", String(255), primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("n", BigInteger, nullable=False),
)

# A user's own state for one notification, only where the user acted on that one notification
# and it differs from the watermarks (marked read above the read watermark, unread below it,
# archived one by one, seen).
marks = Table(
    "marks",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("notification_id", String(26), primary_key=True),
    Column("read_at", TS),
    Column("unread", Boolean, nullable=False, server_default=false()),
    Column("archived_at", TS),
    Column("seen_at", TS),
    Index("ix_marks_notification", "notification_id"),
)

# Per user and stream: every route up to `read_seq` is read, up to `archived_seq` archived (set by
# read-all and archive-all: one row per stream, whatever the number of notifications).
watermarks = Table(
    "watermarks",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("stream", String(255), primary_key=True),
    Column("read_seq", BigInteger, nullable=False, server_default="0"),
    Column("archived_seq", BigInteger, nullable=False, server_default="0"),
    Column("read_at", TS),
    Column("archived_at", TS),
    Column("seen_seq", BigInteger, nullable=False, server_default="0"),  # 0006: seen-all
    Column("seen_at", TS),
)

# Which shared streams a user sees in its inbox: from `since_seq` on, up to `until_seq` once it
# stopped following. `granted`: a publisher subscribed the user (or allowed it to follow).
follows = Table(
    "follows",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("stream", String(255), primary_key=True),
    Column("since_seq", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False),
    Column("until_seq", BigInteger),
    Column("granted", Boolean, nullable=False, server_default="0"),
    Index("ix_follows_stream", "stream", "user_id"),
)

# A user's choices per notification type and channel; NULL means "the app's default".
preferences = Table(
    "preferences",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("in_app", Boolean),
    Column("push", Boolean),
    Column("email", Boolean),  # 0006
)

# A user's time zone and quiet hours ("HH:MM" local time; push is held back in between).
user_settings = Table(
    "user_settings",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("timezone", String(64), nullable=False),
    Column("quiet_start", String(5)),
    Column("quiet_end", String(5)),
)

# What the app (an admin key) decides per type: defaults, mandatory, throttle and digest.
type_settings = Table(
    "type_settings",
    metadata,
    Column("type", String(64), primary_key=True),
    Column("in_app", Boolean, nullable=False),
    Column("push", Boolean, nullable=False),
    Column("mandatory", Boolean, nullable=False),
    Column("throttle_count", Integer),
    Column("throttle_seconds", Integer),
    Column("digest_seconds", Integer),
    Column("email", Boolean, nullable=False, server_default=true()),  # 0006
    # JSON: {"templates": {channel: {locale: {...}}}, "escalate": [...], "locale": "en"} (0006)
    Column("channels", LargeBinary),
)

# The current throttle window per user and type.
throttles = Table(
    "throttles",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("window_start", TS, nullable=False),
    Column("count", Integer, nullable=False),
)

# Low-priority notifications held for a user's next digest of their type.
digest_items = Table(
    "digest_items",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("type", String(64), primary_key=True),
    Column("notification_id", String(26), primary_key=True),
    Column("due_at", TS, nullable=False),
    Index("ix_digest_items_due", "due_at"),
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
    Column("key", String(200), primary_key=True),  # `<publisher key id>:<key>` (0005)
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

# -- Web Push (store/push.py) ---------------------------------------------------------------

# A browser's push subscription (PushSubscription.toJSON()), keyed by a hash of its endpoint:
# an endpoint belongs to one browser profile, so the last user to register it owns it.
push_subscriptions = Table(
    "push_subscriptions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("endpoint", String(2048), nullable=False),
    Column("p256dh", String(128), nullable=False),
    Column("auth", String(64), nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_push_subscriptions_user", "user_id"),
)

# Pushes to send, one row per subscription and notification, written in the publishing
# transaction. `due_at` is when it may be sent next: now, the end of quiet hours, a retry, or
# the end of a sender's lease on it (a sender that died leaves it to be sent again).
push_outbox = Table(
    "push_outbox",
    metadata,
    Column("subscription_id", String(64), primary_key=True),
    Column("notification_id", String(26), primary_key=True),
    Column("user_id", String(200), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("due_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", TS, nullable=False),
    Column("expires_at", TS),
    Index("ix_push_outbox_due", "due_at"),
)

# Values the server makes once and every node shares (the VAPID key pair).
server_settings = Table(
    "server_settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", String(4096), nullable=False),
    Column("created_at", TS, nullable=False),
)

# -- channels: profiles, email, escalation (issue #14; store/profiles.py, store/escalations.py) --

# What the app tells Clarion about a user: where to email it and how to speak to it.
# `email_status` is "bad" once the address was refused for good (a permanent 5xx).
profiles = Table(
    "profiles",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("email", String(320)),
    Column("name", String(200)),
    Column("locale", String(35)),
    Column("timezone", String(64)),
    Column("data", LargeBinary),
    Column("email_status", String(16)),
    Column("updated_at", TS, nullable=False),
)

# Per notification and rule: "if not seen (or read) by `due_at`, use `channel`". One row per
# notification whatever its audience: the sweep expands it to recipients when it comes due.
escalations = Table(
    "escalations",
    metadata,
    Column("notification_id", String(26), primary_key=True),
    Column("rule", Integer, primary_key=True),
    Column("channel", String(16), nullable=False),
    Column("unless", String(8), nullable=False),
    Column("offline", Boolean, nullable=False, server_default=false()),
    Column("due_at", TS, nullable=False),
    Column("created_at", TS, nullable=False),
    Index("ix_escalations_due", "due_at"),
)

# Emails to send, one per notification and user: written by the escalation sweep in the
# transaction that removes the escalation; `due_at` as in push_outbox (quiet hours, retries,
# a sender's lease).
email_outbox = Table(
    "email_outbox",
    metadata,
    Column("notification_id", String(26), primary_key=True),
    Column("user_id", String(200), primary_key=True),
    Column("due_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", TS, nullable=False),
    Index("ix_email_outbox_due", "due_at"),
    Index("ix_email_outbox_user", "user_id"),
)

# When each user had a live connection on each node (escalations with `when: offline`):
# written when the user's first connection on the node opens (`since`) and its last one
# closes (`until`), never in between. An open row (`until` NULL) lasts as long as its node's
# heartbeat (`node_beats`): a node that dies stops counting there. A node's own come and go
# reuse its row, so it holds one row per user and node.
online = Table(
    "online",
    metadata,
    Column("node", String(40), primary_key=True),
    Column("user_id", String(200), primary_key=True),
    Column("since", TS, nullable=False),
    Column("until", TS),
    Index("ix_online_user", "user_id"),
    Index("ix_online_until", "until"),
)
