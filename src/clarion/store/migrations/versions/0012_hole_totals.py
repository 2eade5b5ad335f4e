"""Hole totals (issue #10): the hidden routes of each hole bucket, fine and coarse, counted for
all types together in `hole_totals`, one row a bucket, so a count for a user who mutes no
type sums one row where `hole_buckets` has one per type (store/holes.py). Built from
`hole_buckets`.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"


def upgrade() -> None:
    op.create_table(
        "hole_totals",
        sa.Column("stream", sa.String(255), primary_key=True),
        sa.Column("bucket", sa.BigInteger, primary_key=True),
        sa.Column("n", sa.BigInteger, nullable=False),
        sqlite_with_rowid=False,
    )
    op.execute(
        sa.text(
            "INSERT INTO hole_totals (stream, bucket, n)"
            " SELECT stream, bucket, SUM(n) FROM hole_buckets GROUP BY stream, bucket"
        )
    )


def downgrade() -> None:
    op.drop_table("hole_totals")
