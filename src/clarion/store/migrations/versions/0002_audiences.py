"""Audiences, preferences and fatigue control.

A notification may go to several shared streams (topics, roles, `all`): `notification_streams`
holds each (stream, seq), replacing `notifications.stream/seq`. Follows get an end (`until_seq`,
set by unfollow) and a publisher grant. Preferences, per-type settings (app defaults, mandatory,
throttle, digest), throttle windows and pending digest items get tables of their own.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "notification_streams",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("notification_id", sa.String(26), nullable=False),
    )
    op.create_index("ix_notification_streams_id", "notification_streams", ["notification_id"])
    op.execute(
        "INSERT INTO notification_streams (stream, seq, notification_id) "
        "SELECT stream, seq, id FROM notifications WHERE stream IS NOT NULL"
    )
    with op.batch_alter_table("notifications") as batch:
        batch.drop_index("ix_notifications_stream_seq")
        batch.drop_column("stream")
        batch.drop_column("seq")
        batch.add_column(sa.Column("replaced_by", sa.String(26)))
        batch.add_column(sa.Column("collapsed", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_notifications_created", "notifications", ["created_at"])
    op.create_index("ix_notifications_collapse", "notifications", ["collapse_key"])
    with op.batch_alter_table("inbox") as batch:
        batch.add_column(sa.Column("replaced_by", sa.String(26)))
        batch.add_column(sa.Column("collapsed", sa.Integer, nullable=False, server_default="0"))
    op.create_index("ix_inbox_notification", "inbox", ["notification_id"])
    with op.batch_alter_table("follows") as batch:
        batch.add_column(sa.Column("until_seq", sa.BigInteger))
        batch.add_column(sa.Column("granted", sa.Boolean, nullable=False, server_default="0"))
    op.create_index("ix_follows_stream", "follows", ["stream", "user_id"])
    op.create_table(
        "preferences",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("in_app", sa.Boolean),
        sa.Column("push", sa.Boolean),
    )
    op.create_table(
        "user_settings",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("quiet_start", sa.String(5)),
        sa.Column("quiet_end", sa.String(5)),
    )
    op.create_table(
        "type_settings",
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("in_app", sa.Boolean, nullable=False),
        sa.Column("push", sa.Boolean, nullable=False),
        sa.Column("mandatory", sa.Boolean, nullable=False),
        sa.Column("throttle_count", sa.Integer),
        sa.Column("throttle_seconds", sa.Integer),
        sa.Column("digest_seconds", sa.Integer),
    )
    op.create_table(
        "throttles",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("window_start", TS, nullable=False),
        sa.Column("count", sa.Integer, nullable=False),
    )
    op.create_table(
        "digest_items",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("type", sa.String(64), primary_key=True),
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("due_at", TS, nullable=False),
    )
    op.create_index("ix_digest_items_due", "digest_items", ["due_at"])


def downgrade() -> None:
    raise NotImplementedError("0002 is not reversible; restore a backup instead")
