"""Coarse hole buckets (issue #10): hidden routes are also counted per 32 fine buckets (32,768
seqs), in the same table with `bucket` = -1 - index, so a count over a long range sums one row
per 32,768 seqs instead of one per 1,024 (store/holes.py). Built from the fine buckets.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    op.execute(
        sa.text(
            "INSERT INTO hole_buckets (stream, bucket, type, n)"
            " SELECT stream, -1 - bucket / 32, type, SUM(n) FROM hole_buckets WHERE bucket >= 0"
            " GROUP BY stream, bucket / 32, type"
        )
    )


def downgrade() -> None:
    op.execute("DELETE FROM hole_buckets WHERE bucket < 0")
