"""Initial schema: streams, events, notifications, inbox, follows, keys, idempotency, tickets.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "events",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("notification_id", sa.String(26)),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("priority", sa.String(8), nullable=False),
        sa.Column("stream", sa.String(255)),
        sa.Column("seq", sa.BigInteger),
        sa.Column("collapse_key", sa.String(128)),
        sa.Column("doc", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("publisher", sa.String(32)),
    )
    op.create_index("ix_notifications_stream_seq", "notifications", ["stream", "seq"])
    op.create_table(
        "inbox",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("personal", sa.Boolean, nullable=False),
        sa.Column("read_at", TS),
        sa.Column("archived_at", TS),
        sa.Column("seen_at", TS),
    )
    op.create_index("ix_inbox_user_personal", "inbox", ["user_id", "personal", "notification_id"])
    op.create_table(
        "follows",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("since_seq", sa.BigInteger, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("expires_at", TS),
        sa.Column("revoked_at", TS),
        sa.Column("last_used_at", TS),
    )
    op.create_table(
        "idempotency",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("notification_id", sa.String(26), nullable=False),
        sa.Column("result", sa.LargeBinary, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_table(
        "tickets",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("claims", sa.LargeBinary, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "tickets",
        "idempotency",
        "api_keys",
        "follows",
        "inbox",
        "notifications",
        "events",
        "streams",
    ):
        op.drop_table(table)
