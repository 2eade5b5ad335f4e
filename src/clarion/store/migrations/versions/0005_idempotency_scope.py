"""Idempotency keys scoped to their publisher: stored as `<API key id>:<key>`.

Two publishers may use the same key without one being answered the other's notification.
Existing rows take the publisher recorded on their notification; a row whose notification is
gone (retention) keeps its bare key, which no new publish looks up.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":  # SQLite does not enforce lengths
        op.alter_column("idempotency", "key", type_=sa.String(200))
    op.execute(
        """
        UPDATE idempotency SET key = (
            SELECT n.publisher || ':' || idempotency.key FROM notifications n
            WHERE n.id = idempotency.notification_id AND n.publisher IS NOT NULL
        )
        WHERE EXISTS (
            SELECT 1 FROM notifications n
            WHERE n.id = idempotency.notification_id AND n.publisher IS NOT NULL
        )
        """
    )


def downgrade() -> None:
    raise NotImplementedError("keys cannot be unscoped: two publishers may share one now")
