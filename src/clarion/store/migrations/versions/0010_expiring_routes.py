"""Expiring routes are regular until they expire (issue #10): an expiry alone no longer makes a
route irregular (looked at one by one by every unread count of its window).

Routes that were irregular only for their expiry (no `also`) become regular; those already
expired are hidden now, counted in `hole_buckets` as the expiry sweep does. A partial index of
the regular expiring routes by (stream, expires_at) lets a count find those expired since the
sweep's last pass (store/holes.py).

Revision ID: 0010
Revises: 0009
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
TS = sa.DateTime(timezone=True)
EXPIRED = "expires_at IS NOT NULL AND expires_at <= :now AND irregular <> 2"


def upgrade() -> None:
    now = sa.bindparam("now", datetime.now(UTC), type_=TS)
    # Hidden first, counted by bucket (`WHERE` before `ON CONFLICT`: SQLite's parser needs it).
    op.execute(
        sa.text(
            "INSERT INTO hole_buckets (stream, bucket, type, n) SELECT stream, seq / 1024, type,"
            f" COUNT(*) FROM routes WHERE {EXPIRED} GROUP BY stream, seq / 1024, type"
            " ON CONFLICT (stream, bucket, type) DO UPDATE SET n = hole_buckets.n + excluded.n"
        ).bindparams(now)
    )
    op.execute(
        sa.text(f"UPDATE routes SET irregular = 2, collapse_key = NULL WHERE {EXPIRED}").bindparams(
            now
        )
    )
    op.execute("UPDATE routes SET irregular = 0 WHERE irregular = 1 AND also IS NULL")
    op.create_index(
        "ix_routes_expiring",
        "routes",
        ["stream", "expires_at"],
        sqlite_where=sa.text("expires_at IS NOT NULL AND irregular = 0"),
        postgresql_where=sa.text("expires_at IS NOT NULL AND irregular = 0"),
    )


def downgrade() -> None:
    op.drop_index("ix_routes_expiring", "routes")
    op.execute("UPDATE routes SET irregular = 1 WHERE irregular = 0 AND expires_at IS NOT NULL")
