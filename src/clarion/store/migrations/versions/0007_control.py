"""Control and visibility (issue #15): scheduled publishes, cancellation keys, the delivery
log, outbound webhooks (config, outbox, attempts) and presence.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduled",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("body", sa.LargeBinary, nullable=False),
        sa.Column("publisher", sa.String(64)),
        sa.Column("cancellation_key", sa.String(128)),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_scheduled_due", "scheduled", ["due_at"])
    op.create_index("ix_scheduled_cancellation", "scheduled", ["cancellation_key"])
    op.create_table(
        "cancellation_keys",
        sa.Column("key", sa.String(128), primary_key=True),
        sa.Column("notification_id", sa.String(26), primary_key=True),
    )
    op.create_table(
        "deliveries",
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("state", sa.String(16), primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("detail", sa.String(500)),
        sa.Column("n", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("users", sa.LargeBinary),
    )
    op.create_table(
        "webhooks",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("url", sa.String(2048), nullable=False),
        sa.Column("events", sa.LargeBinary, nullable=False),
        sa.Column("types", sa.LargeBinary),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("failing_since", TS),
        sa.Column("disabled_at", TS),
    )
    op.create_table(
        "webhook_outbox",
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False, unique=True),
        sa.Column("webhook", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(200), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_webhook_outbox_order", "webhook_outbox", ["webhook", "user_id", "n"])
    op.create_index("ix_webhook_outbox_due", "webhook_outbox", ["due_at"])
    op.create_table(
        "webhook_attempts",
        sa.Column("n", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("webhook", sa.String(64), nullable=False),
        sa.Column("message_id", sa.String(40), nullable=False),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status", sa.Integer),
        sa.Column("error", sa.String(500)),
    )
    op.create_index("ix_webhook_attempts_webhook", "webhook_attempts", ["webhook", "n"])
    op.create_table(
        "presence",
        sa.Column("node", sa.String(40), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("transport", sa.String(16), primary_key=True),
        sa.Column("connections", sa.Integer, nullable=False),
        sa.Column("alive_at", TS, nullable=False),
    )
    op.create_index("ix_presence_user", "presence", ["user_id"])
    op.create_table(
        "last_seen",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "last_seen",
        "presence",
        "webhook_attempts",
        "webhook_outbox",
        "webhooks",
        "deliveries",
        "cancellation_keys",
        "scheduled",
    ):
        op.drop_table(table)
