"""Channels (issue #14): user profiles, the `email` channel in preferences and type settings
(with templates and escalation rules), a seen watermark, escalations, the email outbox and
presence.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("email", sa.String(320)),
        sa.Column("name", sa.String(200)),
        sa.Column("locale", sa.String(35)),
        sa.Column("timezone", sa.String(64)),
        sa.Column("data", sa.LargeBinary),
        sa.Column("email_status", sa.String(16)),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_table(
        "escalations",
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("rule", sa.Integer, primary_key=True),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("unless", sa.String(8), nullable=False),
        sa.Column("offline", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_escalations_due", "escalations", ["due_at"])
    op.create_table(
        "email_outbox",
        sa.Column("notification_id", sa.String(26), primary_key=True),
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("due_at", TS, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
    )
    op.create_index("ix_email_outbox_due", "email_outbox", ["due_at"])
    op.create_index("ix_email_outbox_user", "email_outbox", ["user_id"])
    op.create_table(
        "online",
        sa.Column("user_id", sa.String(200), primary_key=True),
        sa.Column("since", TS, nullable=False),
        sa.Column("seen_at", TS, nullable=False),
    )
    with op.batch_alter_table("preferences") as t:
        t.add_column(sa.Column("email", sa.Boolean))
    with op.batch_alter_table("type_settings") as t:
        t.add_column(sa.Column("email", sa.Boolean, nullable=False, server_default=sa.true()))
        t.add_column(sa.Column("channels", sa.LargeBinary))
    with op.batch_alter_table("watermarks") as t:
        t.add_column(sa.Column("seen_seq", sa.BigInteger, nullable=False, server_default="0"))
        t.add_column(sa.Column("seen_at", TS))


def downgrade() -> None:
    with op.batch_alter_table("watermarks") as t:
        t.drop_column("seen_at")
        t.drop_column("seen_seq")
    with op.batch_alter_table("type_settings") as t:
        t.drop_column("channels")
        t.drop_column("email")
    with op.batch_alter_table("preferences") as t:
        t.drop_column("email")
    for name in ("online", "email_outbox", "escalations", "profiles"):
        op.drop_table(name)
