"""Tables of control and visibility (issue #15): scheduled publishes, cancellation keys, the
delivery log, outbound webhooks and presence. Same metadata as store/schema.py; migration
0007 creates them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, LargeBinary, String, Table

from clarion.store.schema import TS, metadata

# A publish accepted for later: its request body, released (and given seqs) at `due_at`.
scheduled = Table(
    "scheduled",
    metadata,
    Column("id", String(26), primary_key=True),  # the notification id answered at once
    Column("due_at", TS, nullable=False),
    Column("body", LargeBinary, nullable=False),  # the PublishIn, as JSON
    Column("publisher", String(64)),
    Column("cancellation_key", String(128)),
    Column("created_at", TS, nullable=False),
    Index("ix_scheduled_due", "due_at"),
    Index("ix_scheduled_cancellation", "cancellation_key"),
)

# Released notifications that carry a cancellation key: what a cancel looks for among the
# pending (digest items, escalations). Written only for publishes that carry a key.
cancellation_keys = Table(
    "cancellation_keys",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("notification_id", String(26), primary_key=True),
)

# The delivery log: the first time each (notification, user, channel, state) happened.
# `user_id` "*" holds a shared-stream notification's counts (`n`) instead of per-user rows;
# `delivered` to named users is written one row per notification and batch (state
# `delivered*`, `user_id` the batch's id), its users in `users` (JSON).
deliveries = Table(
    "deliveries",
    metadata,
    Column("notification_id", String(26), primary_key=True),
    Column("user_id", String(200), primary_key=True),
    Column("channel", String(16), primary_key=True),
    Column("state", String(16), primary_key=True),
    Column("at", TS, nullable=False),
    Column("detail", String(500)),
    Column("n", BigInteger, nullable=False, server_default="1"),
    Column("users", LargeBinary),
)

webhooks = Table(
    "webhooks",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("url", String(2048), nullable=False),
    Column("events", LargeBinary, nullable=False),  # JSON list
    Column("types", LargeBinary),  # JSON list, or NULL: every type
    Column("secret", String(128), nullable=False),  # whsec_...
    Column("created_at", TS, nullable=False),
    Column("failing_since", TS),
    Column("disabled_at", TS),
)

# One row per message to send; `n` orders them, so each (webhook, user) goes out in order.
webhook_outbox = Table(
    "webhook_outbox",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False, unique=True),  # webhook-id, stable across retries
    Column("webhook", String(64), nullable=False),
    Column("user_id", String(200), nullable=False),
    Column("event", String(40), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("due_at", TS, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("created_at", TS, nullable=False),
    Index("ix_webhook_outbox_order", "webhook", "user_id", "n"),
    Index("ix_webhook_outbox_due", "due_at"),
)

webhook_attempts = Table(
    "webhook_attempts",
    metadata,
    Column("n", Integer, primary_key=True, autoincrement=True),
    Column("webhook", String(64), nullable=False),
    Column("message_id", String(40), nullable=False),
    Column("event", String(40), nullable=False),
    Column("at", TS, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("status", Integer),
    Column("error", String(500)),
    Index("ix_webhook_attempts_webhook", "webhook", "n"),
)

# Live connections per node, user and transport, written by each node in batches when they
# change; they count while their node's `node_beats` row is fresh, so a killed node's users go
# offline by themselves.
presence = Table(
    "presence",
    metadata,
    Column("node", String(40), primary_key=True),
    Column("user_id", String(200), primary_key=True),
    Column("transport", String(16), primary_key=True),
    Column("connections", Integer, nullable=False),
    Index("ix_presence_user", "user_id"),
)

# Each node's heartbeat, one row per node rewritten with every presence batch (about once a
# second): one statement whatever the node holds. Presence and `online` rows count while
# their node's row is fresh.
node_beats = Table(
    "node_beats",
    metadata,
    Column("node", String(40), primary_key=True),
    Column("alive_at", TS, nullable=False),
)

# Each node's stats snapshot (the console's Live page, across nodes: stats.py), rewritten
# about once a second; a node whose `alive_at` is old is left out, and removed a while later.
nodes = Table(
    "nodes",
    metadata,
    Column("node", String(40), primary_key=True),
    Column("alive_at", TS, nullable=False),
    Column("stats", LargeBinary, nullable=False),  # JSON
)

last_seen = Table(
    "last_seen",
    metadata,
    Column("user_id", String(200), primary_key=True),
    Column("at", TS, nullable=False),
)
